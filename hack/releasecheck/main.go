// Command releasecheck holds the release rules the release workflow
// (.github/workflows/release.yaml) and ci/25-release.sh apply to a tag:
//
//	releasecheck tag -tag v1.2.0 [-chart charts/langbot]
//	    refuse a tag that does not release the chart (rules: CheckTag); print
//	    version=, app-version= and prerelease= lines (the workflow appends them to $GITHUB_OUTPUT)
//	releasecheck notes -version 1.2.0 [-changelog CHANGELOG.md]
//	    print the CHANGELOG.md entry of the version (the GitHub release's body); refuse a
//	    missing or empty entry, or one without its Upgrading section
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		slog.Error("releasecheck", "err", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: releasecheck tag|notes [flags]: name a subcommand")
	}
	fs := flag.NewFlagSet("releasecheck "+args[0], flag.ContinueOnError)
	switch args[0] {
	case "tag":
		tag := fs.String("tag", "", "the release tag, v<chart version>")
		chart := fs.String("chart", "charts/langbot", "chart directory")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *tag == "" {
			return fmt.Errorf("-tag is empty: pass the tag being released, e.g. -tag v1.2.0")
		}
		file := filepath.Join(*chart, "Chart.yaml")
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read chart metadata: %w", err)
		}
		r, err := CheckTag(*tag, b)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		fmt.Printf("version=%s\napp-version=%s\nprerelease=%t\n", r.Version, r.AppVersion, r.Prerelease)
	case "notes":
		version := fs.String("version", "", "the chart version whose entry to print")
		changelog := fs.String("changelog", "CHANGELOG.md", "the changelog")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		b, err := os.ReadFile(*changelog)
		if err != nil {
			return fmt.Errorf("read changelog: %w", err)
		}
		notes, err := Notes(b, *version)
		if err != nil {
			return fmt.Errorf("%s: %w", *changelog, err)
		}
		fmt.Print(notes)
	default:
		return fmt.Errorf("unknown subcommand %q: use tag or notes", args[0])
	}
	return nil
}

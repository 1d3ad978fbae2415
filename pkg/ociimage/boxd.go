package ociimage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"sigs.k8s.io/yaml"
)

// BoxdSources are the paths whose last commit is the boxd image's revision: the image holds
// nothing but binaries built from them (boxd imports no package of the module outside boxd/).
var BoxdSources = []string{"boxd", "go.mod", "go.sum"}

// BoxdArchitectures are the platforms the boxd image index carries.
var BoxdArchitectures = []string{"amd64", "arm64"}

// BoxdSpec is the boxd image of boxd/Dockerfile (two static binaries, a world-writable /tmp,
// root, /boxd as entrypoint listening on 5410) for every BoxdArchitectures, labelled with
// version and revision.
func BoxdSpec(moduleDir, version string, rev Revision) Spec {
	return Spec{
		Architectures: BoxdArchitectures,
		Binaries: []Binary{
			{Package: "./boxd/cmd/boxd", Path: "/boxd"},
			{Package: "./boxd/cmd/boxagent", Path: "/boxagent"},
		},
		Dirs: []string{"/tmp"},
		Labels: map[string]string{
			LabelTitle:    "boxd",
			LabelDesc:     "Go LangBot Box runtime, drop-in for lbp box of langbot-plugin 0.5.5",
			LabelSource:   "https://github.com/langbot-k8s/langbot-k8s",
			LabelVersion:  version,
			LabelRevision: rev.Commit,
			LabelLicenses: "Apache-2.0",
		},
		Entrypoint:   []string{"/boxd"},
		Cmd:          []string{"--host", "0.0.0.0", "--ws-control-port", "5410"},
		ExposedPorts: []string{"5410/tcp"},
		User:         "0:0",
		Created:      rev.Time,
		ModuleDir:    moduleDir,
	}
}

// Revision is a commit and its committer time (the image's timestamp, so that a rebuild of
// the same commit gives the same digest).
type Revision struct {
	Commit string
	Time   time.Time
}

// SourceRevision is the last commit of the git work tree at dir that changed any of paths.
func SourceRevision(ctx context.Context, dir string, paths ...string) (Revision, error) {
	args := append([]string{"log", "-1", "--format=%H %ct", "--"}, paths...)
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return Revision{}, fmt.Errorf("git log of %v in %s: %w", paths, dir, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return Revision{}, fmt.Errorf("git log of %v in %s: no commit touches them (output %q)", paths, dir, out)
	}
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Revision{}, fmt.Errorf("git log of %v: commit time %q: %w", paths, f[1], err)
	}
	return Revision{Commit: f[0], Time: time.Unix(sec, 0).UTC()}, nil
}

// ChartVersion reads the version of the chart in chartDir (its Chart.yaml).
func ChartVersion(chartDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", fmt.Errorf("read chart metadata: %w", err)
	}
	var c struct {
		Version string `json:"version"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("parse %s/Chart.yaml: %w", chartDir, err)
	}
	if c.Version == "" {
		return "", fmt.Errorf("%s/Chart.yaml: version is empty: set the chart's version", chartDir)
	}
	return c.Version, nil
}

// ExportSources writes paths as they are in commit rev of the git repository at repoDir into
// dst (git archive): a release image is built from committed sources only, whatever the work
// tree holds, so its digest is the one pinned in the chart.
func ExportSources(ctx context.Context, repoDir, rev, dst string, paths ...string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("export dir %s: %w", dst, err)
	}
	args := append([]string{"archive", "--format=tar", rev, "--"}, paths...)
	archive := exec.CommandContext(ctx, "git", args...)
	archive.Dir = repoDir
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", dst)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return fmt.Errorf("git archive %s: %w", rev, err)
	}
	untar.Stdin = pipe
	var errA, errT strings.Builder
	archive.Stderr, untar.Stderr = &errA, &errT
	if err := archive.Start(); err != nil {
		return fmt.Errorf("git archive %s: %w", rev, err)
	}
	if err := untar.Run(); err != nil {
		_ = archive.Wait()
		return fmt.Errorf("untar git archive %s into %s: %w: %s", rev, dst, err, errT.String())
	}
	if err := archive.Wait(); err != nil {
		return fmt.Errorf("git archive %s %v: %w: %s", rev, paths, err, errA.String())
	}
	return nil
}

// BuildBoxd builds the boxd image index of the committed sources of the repository at
// repoDir, versioned as the chart in chartDir: its revision is the last commit of BoxdSources.
func BuildBoxd(ctx context.Context, repoDir, chartDir, workDir string) (v1.ImageIndex, Spec, error) {
	version, err := ChartVersion(chartDir)
	if err != nil {
		return nil, Spec{}, err
	}
	rev, err := SourceRevision(ctx, repoDir, BoxdSources...)
	if err != nil {
		return nil, Spec{}, err
	}
	src := filepath.Join(workDir, "src")
	if err := ExportSources(ctx, repoDir, rev.Commit, src, BoxdSources...); err != nil {
		return nil, Spec{}, err
	}
	spec := BoxdSpec(src, version, rev)
	idx, err := Build(ctx, spec, filepath.Join(workDir, "bin"))
	return idx, spec, err
}

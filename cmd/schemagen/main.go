// Command schemagen writes charts/langbot/values.schema.json from schemas/values.schema.yaml,
// or with -check fails when the committed JSON differs from what the source generates.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/langbot-k8s/langbot-k8s/pkg/schema"
)

func main() {
	src := flag.String("source", "schemas/values.schema.yaml", "schema source (YAML)")
	out := flag.String("out", "charts/langbot/values.schema.json", "generated JSON schema")
	check := flag.Bool("check", false, "fail if -out differs from the generated schema instead of writing it")
	flag.Parse()
	if err := run(*src, *out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(src, out string, check bool) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	gen, err := schema.Generate(in)
	if err != nil {
		return fmt.Errorf("generate from %s: %w", src, err)
	}
	if check {
		cur, err := os.ReadFile(out)
		if err != nil {
			return fmt.Errorf("read %s: %w", out, err)
		}
		if !bytes.Equal(cur, gen) {
			return fmt.Errorf("%s is out of date with %s: run `make schema`", out, src)
		}
		return nil
	}
	return os.WriteFile(out, gen, 0o644)
}

// Command langbotctl renders, validates and explains the LangBot chart for a values stack.
//
//	langbotctl render   [-f values.yaml]... [--set k=v]...
//	langbotctl validate [-f values.yaml]... [--set k=v]... [--output json]
//	langbotctl explain  [-f values.yaml]... [--nodes nodes.yaml | --kubeconfig FILE]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `langbotctl: render, validate and explain the LangBot Helm chart

Usage:
  langbotctl render   [flags]   print the manifests (as helm template does)
  langbotctl validate [flags]   schema + render + strict decode + Box invariants; exit 1 on any problem
  langbotctl explain  [flags]   placement per node pool, Pod Security levels, exposed ports

Flags (helm-compatible): -f/--values FILE, --set, --set-string, --set-file, --set-json,
  --release-name NAME (langbot), --namespace NS (default), --kube-version V (1.34.0),
  --chart DIR (./charts/langbot), --output text|json
explain only: --nodes FILE (a YAML List/NodeList of Nodes), --kubeconfig FILE (live cluster nodes)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, rest := args[0], args[1:]
	f, err := parseFlags(cmd, rest)
	if err != nil {
		fmt.Fprintf(stderr, "langbotctl %s: %v\n\n%s", cmd, err, usage)
		return 2
	}
	switch cmd {
	case "render":
		return runRender(ctx, f, stdout, stderr)
	case "validate":
		return runValidate(ctx, f, stdout, stderr)
	case "explain":
		return runExplain(ctx, f, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "langbotctl: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

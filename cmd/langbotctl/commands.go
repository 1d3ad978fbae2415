package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/pkg/check"
	"github.com/langbot-k8s/langbot-k8s/pkg/explain"
	"github.com/langbot-k8s/langbot-k8s/pkg/nodes"
)

func runRender(ctx context.Context, f *flags, stdout, stderr io.Writer) int {
	rep, err := check.Run(ctx, f.opts)
	if err != nil {
		fmt.Fprintln(stderr, "langbotctl render:", err)
		return 1
	}
	if rep.Rendered == nil || len(rep.Schema) > 0 {
		printProblems(stderr, rep)
		return 1
	}
	fmt.Fprint(stdout, rep.Rendered.All())
	if len(rep.Findings) > 0 {
		printProblems(stderr, rep) // rendered, but the Box design would not work
		return 1
	}
	return 0
}

func runValidate(ctx context.Context, f *flags, stdout, stderr io.Writer) int {
	rep, err := check.Run(ctx, f.opts)
	if err != nil {
		fmt.Fprintln(stderr, "langbotctl validate:", err)
		return 1
	}
	if f.output == "json" {
		out := struct {
			OK       bool     `json:"ok"`
			Problems []string `json:"problems"`
			*check.Report
		}{rep.OK(), rep.Problems(), rep}
		if out.Problems == nil {
			out.Problems = []string{}
		}
		writeJSON(stdout, out)
	} else if rep.OK() {
		fmt.Fprintf(stdout, "valid: %d objects rendered, every Box invariant holds\n", len(rep.Set.Objects))
		for _, p := range rep.PodSecurity {
			fmt.Fprintf(stdout, "  %-45s needs Pod Security level %s\n", p.Object, p.Level)
		}
		printTokens(stdout, rep)
	} else {
		printProblems(stdout, rep)
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

func runExplain(ctx context.Context, f *flags, stdout, stderr io.Writer) int {
	rep, err := check.Run(ctx, f.opts)
	if err != nil {
		fmt.Fprintln(stderr, "langbotctl explain:", err)
		return 1
	}
	if rep.Set == nil {
		printProblems(stderr, rep)
		return 1
	}
	ns, err := nodes.Load(ctx, f.nodes, f.kubeconfig)
	if err != nil {
		fmt.Fprintln(stderr, "langbotctl explain:", err)
		return 1
	}
	ex, err := explain.Explain(rep.Set, ns)
	if err != nil {
		fmt.Fprintln(stderr, "langbotctl explain:", err)
		return 1
	}
	if f.output == "json" {
		writeJSON(stdout, ex)
	} else {
		printExplain(stdout, ex, ns != nil)
	}
	for _, c := range ex.Components {
		if c.Schedulable != nil && !*c.Schedulable {
			return 3 // a pod would stay Pending
		}
	}
	if sb := ex.Sandboxes; sb != nil && sb.Schedulable != nil && !*sb.Schedulable {
		return 3 // every sandbox Pod would stay Pending
	}
	return 0
}

func printProblems(w io.Writer, rep *check.Report) {
	ps := rep.Problems()
	fmt.Fprintf(w, "invalid: %d problem(s)\n", len(ps))
	for _, p := range ps {
		fmt.Fprintf(w, "  - %s\n", strings.ReplaceAll(strings.TrimSpace(p), "\n", "\n    "))
	}
}

func printExplain(w io.Writer, ex *explain.Report, withNodes bool) {
	fmt.Fprintln(w, "Placement:")
	for _, c := range ex.Components {
		fmt.Fprintf(w, "  %-15s %s\n", c.Component, c.Pool)
		if withNodes {
			if c.Schedulable != nil && *c.Schedulable {
				fmt.Fprintf(w, "  %-15s   -> schedulable on: %s\n", "", strings.Join(c.Nodes, ", "))
			} else {
				fmt.Fprintf(w, "  %-15s   -> PENDING: %s\n", "", c.Pending)
			}
		}
	}
	if sb := ex.Sandboxes; sb != nil {
		fmt.Fprintf(w, "  %-15s %s\n", "sandboxes", sb.Pool)
		if withNodes {
			if sb.Schedulable != nil && *sb.Schedulable {
				fmt.Fprintf(w, "  %-15s   -> schedulable on: %s\n", "", strings.Join(sb.Nodes, ", "))
			} else {
				fmt.Fprintf(w, "  %-15s   -> PENDING: %s\n", "", sb.Pending)
			}
		}
	}
	fmt.Fprintln(w, "Pod Security level needed:")
	for _, c := range ex.Components {
		fmt.Fprintf(w, "  %-15s %s", c.Component, c.PodSecurity)
		if len(c.PSSReasons) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(c.PSSReasons, "; "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Exposed:")
	for _, e := range ex.Exposures {
		fmt.Fprintf(w, "  %-10s %-25s %s\n", e.Kind, e.Name, e.Detail)
	}
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// printTokens says which path each control token is on, and warns about tokens that change on
// every render (GitOps tools render with helm template, where lookup finds nothing).
func printTokens(w io.Writer, rep *check.Report) {
	if len(rep.Tokens) > 0 {
		fmt.Fprintln(w, "control tokens:")
	}
	for _, t := range rep.Tokens {
		fmt.Fprintf(w, "  %-15s %-16s Secret %s key %s\n", t.Token, t.Source, t.Secret, t.Key)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

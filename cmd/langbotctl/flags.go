package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/pkg/check"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type flags struct {
	opts       check.Options
	output     string
	nodes      string
	kubeconfig string
}

func parseFlags(cmd string, args []string) (*flags, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var st values.Stack
	var f flags
	fs.Var((*multi)(&st.Files), "f", "values file (repeatable)")
	fs.Var((*multi)(&st.Files), "values", "values file (repeatable)")
	fs.Var((*multi)(&st.Set), "set", "set a value (repeatable)")
	fs.Var((*multi)(&st.SetString), "set-string", "set a string value (repeatable)")
	fs.Var((*multi)(&st.SetFile), "set-file", "set a value from a file (repeatable)")
	fs.Var((*multi)(&st.SetJSON), "set-json", "set a JSON value (repeatable)")
	ro := render.Options{}
	fs.StringVar(&ro.ChartPath, "chart", "charts/langbot", "chart directory")
	fs.StringVar(&ro.ReleaseName, "release-name", "langbot", "release name")
	fs.StringVar(&ro.Namespace, "namespace", "default", "namespace")
	fs.StringVar(&ro.KubeVersion, "kube-version", "1.34.0", "Kubernetes version to render for")
	fs.StringVar(&f.output, "output", "text", "text or json")
	fs.StringVar(&f.nodes, "nodes", "", "explain: YAML file with the cluster's Nodes")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "explain: read the nodes from this cluster")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("--output must be text or json, not %q", f.output)
	}
	f.opts = check.Options{Render: ro, Values: st}
	return &f, nil
}

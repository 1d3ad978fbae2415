// Package render renders the chart through the Helm SDK exactly as `helm template` does,
// with an explicit Kubernetes version and API versions, and no cluster.
package render

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
)

// DefaultAPIVersions are the optional APIs the chart can target besides the built-in ones,
// so that ServiceMonitor and HTTPRoute render when enabled.
var DefaultAPIVersions = []string{
	"monitoring.coreos.com/v1",
	"monitoring.coreos.com/v1/ServiceMonitor",
	"gateway.networking.k8s.io/v1",
	"gateway.networking.k8s.io/v1/HTTPRoute",
}

// Options describes one render.
type Options struct {
	ChartPath   string   // directory of the chart
	ReleaseName string   // default "langbot"
	Namespace   string   // default "default"
	KubeVersion string   // default "1.34.0"
	APIVersions []string // extra API versions; default DefaultAPIVersions
	// SkipSchemaValidation renders even when values.schema.json rejects the values, so the
	// templates' own cross-field checks can still report (the caller validated the schema).
	SkipSchemaValidation bool
}

// Result is a rendered release.
type Result struct {
	Manifest string // the objects, as `helm template` prints them (without hooks)
	Hooks    string // hook objects (helm test pods)
	Notes    string // rendered NOTES.txt
	Values   map[string]any
}

// All returns manifests and hooks together.
func (r *Result) All() string { return r.Manifest + "\n---\n" + r.Hooks }

// LoadChart loads the chart at path.
func LoadChart(path string) (*chart.Chart, error) {
	ch, err := loader.Load(path)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", path, err)
	}
	return ch, nil
}

// Render renders the chart with the user values (chart defaults are merged by Helm, and the
// values are validated against the chart's values.schema.json by Helm itself).
func Render(ctx context.Context, opts Options, vals map[string]any) (*Result, error) {
	opts = withDefaults(opts)
	ch, err := LoadChart(opts.ChartPath)
	if err != nil {
		return nil, err
	}
	kv, err := chartutil.ParseKubeVersion(opts.KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("parse --kube-version %q: %w", opts.KubeVersion, err)
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.DryRunOption = "client"
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = opts.ReleaseName
	inst.Namespace = opts.Namespace
	inst.KubeVersion = kv
	inst.APIVersions = chartutil.VersionSet(opts.APIVersions)
	inst.SkipSchemaValidation = opts.SkipSchemaValidation
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := inst.RunWithContext(ctx, ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s as release %q: %w", opts.ChartPath, opts.ReleaseName, err)
	}
	return &Result{Manifest: rel.Manifest, Hooks: hooks(rel), Notes: rel.Info.Notes, Values: rel.Config}, nil
}

func withDefaults(o Options) Options {
	if o.ReleaseName == "" {
		o.ReleaseName = "langbot"
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.KubeVersion == "" {
		o.KubeVersion = "1.34.0"
	}
	if o.APIVersions == nil {
		o.APIVersions = DefaultAPIVersions
	}
	return o
}

func hooks(rel *release.Release) string {
	hs := append([]*release.Hook(nil), rel.Hooks...)
	sort.Slice(hs, func(i, j int) bool { return hs[i].Path < hs[j].Path })
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String()
}

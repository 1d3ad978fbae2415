// Package check runs the whole validation pipeline on a values stack: JSON schema
// (gojsonschema), Helm render (which also applies Helm's own schema validation and the
// chart's cross-field `fail` rules), strict decoding of the output and the Box invariants.
package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/langbot-k8s/langbot-k8s/pkg/invariants"
	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/schema"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

// Options selects the chart, the values stack and the render settings.
type Options struct {
	Render render.Options
	Values values.Stack
}

// Report is everything found. Problems is empty when the release is valid.
type Report struct {
	Schema      []schema.Problem         `json:"schema,omitempty"`
	RenderError string                   `json:"renderError,omitempty"`
	DecodeError string                   `json:"decodeError,omitempty"`
	Findings    []invariants.Finding     `json:"findings,omitempty"`
	PodSecurity []invariants.PodSecurity `json:"podSecurity,omitempty"`

	Rendered *render.Result `json:"-"`
	Set      *manifest.Set  `json:"-"`
}

// Problems lists every problem as one line each.
func (r *Report) Problems() []string {
	var out []string
	for _, p := range r.Schema {
		out = append(out, "values: "+p.String())
	}
	if r.RenderError != "" {
		out = append(out, "render: "+r.RenderError)
	}
	if r.DecodeError != "" {
		out = append(out, "manifest: "+r.DecodeError)
	}
	for _, f := range r.Findings {
		out = append(out, "invariant: "+f.String())
	}
	return out
}

// OK reports whether nothing was found.
func (r *Report) OK() bool { return len(r.Problems()) == 0 }

// Run validates the values stack and, if the chart renders, the rendered release.
// An error is returned only when the pipeline itself cannot run (unreadable files).
func Run(ctx context.Context, o Options) (*Report, error) {
	vals, err := o.Values.Merge()
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	schemaJSON, err := os.ReadFile(filepath.Join(o.Render.ChartPath, "values.schema.json"))
	if err != nil {
		return nil, fmt.Errorf("read chart schema: %w", err)
	}
	full, err := withChartDefaults(o.Render.ChartPath, vals)
	if err != nil {
		return nil, err
	}
	v, err := schema.NewValidator(schemaJSON)
	if err != nil {
		return nil, err
	}
	if rep.Schema, err = v.Validate(full); err != nil {
		return nil, err
	}
	ro := o.Render
	// gojsonschema already listed the schema problems: render anyway so the chart's cross-field
	// rules and the invariants can report too, and the user sees every problem at once.
	ro.SkipSchemaValidation = len(rep.Schema) > 0
	res, err := render.Render(ctx, ro, vals)
	if err != nil {
		rep.RenderError = err.Error()
		return rep, nil
	}
	rep.Rendered = res
	set, err := manifest.Decode(res.All())
	if err != nil {
		rep.DecodeError = err.Error()
	}
	if set == nil {
		return rep, nil
	}
	rep.Set = set
	rep.Findings = invariants.Run(set)
	if rep.PodSecurity, err = invariants.PodSecurityLevels(set); err != nil {
		return nil, err
	}
	return rep, nil
}

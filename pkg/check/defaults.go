package check

import (
	"fmt"

	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/langbot-k8s/langbot-k8s/pkg/render"
)

// withChartDefaults coalesces user values over the chart's values.yaml, as Helm does before
// validating, so the schema sees the complete values tree.
func withChartDefaults(chartPath string, vals map[string]any) (map[string]any, error) {
	ch, err := render.LoadChart(chartPath)
	if err != nil {
		return nil, err
	}
	merged, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("merge values with chart defaults: %w", err)
	}
	return merged.AsMap(), nil
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Load reads a JSON report.
func Load(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode report %s: %w", path, err)
	}
	return &r, nil
}

// Compare prints p50/p99 of each series of two runs side by side.
func Compare(w io.Writer, old, cur *Report) {
	fmt.Fprintf(w, "| workload | way | old p50 | new p50 | old p99 | new p99 |\n|---|---|---|---|---|---|\n")
	for _, n := range cur.Series {
		for _, o := range old.Series {
			if o.Workload == n.Workload && o.Way == n.Way {
				a, b := o.Compute(), n.Compute()
				fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.2f | %.2f |\n", n.Workload, n.Way, a.P50, b.P50, a.P99, b.P99)
			}
		}
	}
}

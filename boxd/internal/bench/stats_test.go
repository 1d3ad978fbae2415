package bench

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestMarkdownRatiosForEveryWayAgainstRaw(t *testing.T) {
	rep := Report{Machine: "m, 2 cores", Started: time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC), Series: []Series{
		{Workload: "exec", Way: "raw", Samples: []float64{40, 50, 60}},
		{Workload: "exec", Way: "boxd", Samples: []float64{55, 44, 66}},
		{Workload: "exec", Way: "boxd agent", Samples: []float64{5, 4, 6}},
		{Workload: "relay", Way: "boxd", Samples: []float64{0.1}},
	}}
	cases := []struct {
		name string
		want string
	}{
		{"table row per way", "| boxd agent | 3 | 4.00 | 5.00 | 6.00 | 6.00 | 6.00 |\n"},
		{"boxd ratio", "boxd / raw: p50 1.10x, p99 1.10x  \n"},
		{"agent ratio", "boxd agent / raw: p50 0.10x, p99 0.10x  \n"},
		{"no ratio without raw", "| boxd | 1 | 0.10 | 0.10 | 0.10 | 0.10 | 0.10 |\n\n"},
	}
	var buf bytes.Buffer
	rep.Markdown(&buf)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Contains(t, buf.String(), tc.want)
		})
	}
	assert.Equal(t, 2, bytes.Count(buf.Bytes(), []byte("/ raw:")), "ratios only where a raw series exists")
}

func TestTargetsAreMetOrMissed(t *testing.T) {
	rep := Report{Series: []Series{{Workload: "exec", Way: "agent", Samples: []float64{3, 4, 9}}}}
	cases := []struct {
		name  string
		limit float64
		row   string
	}{
		{"within the limit", 5, "| p50 ≤ 5 | ≤ 5 ms | 4.00 | met |\n"},
		{"at the limit", 4, "| p50 ≤ 4 | ≤ 4 ms | 4.00 | met |\n"},
		{"over the limit", 3.5, "| p50 ≤ 3.5 | ≤ 3.5 ms | 4.00 | missed |\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rep
			r.Targets = nil
			goal := fmt.Sprintf("≤ %g ms", tc.limit)
			r.target(Target{Name: "p50 " + goal[:len(goal)-3], Goal: goal, Measured: r.stats("exec", "agent").P50, Limit: tc.limit})
			var buf bytes.Buffer
			r.Markdown(&buf)
			assert.Contains(t, buf.String(), tc.row)
		})
	}
	missing := Target{Name: "no such series", Measured: rep.stats("exec", "nope").P50, Limit: 1e9}
	assert.False(t, missing.Met(), "a figure that was not measured is never met")
}

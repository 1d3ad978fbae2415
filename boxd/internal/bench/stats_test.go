package bench

import (
	"bytes"
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

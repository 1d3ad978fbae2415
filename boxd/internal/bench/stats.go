// Package bench measures boxd next to the raw Docker Engine API on the same machine, in one
// interleaved run, and prints markdown tables (and JSON for later comparison).
package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"time"
)

// Series is the samples of one workload measured one way.
type Series struct {
	Workload string    `json:"workload"`
	Way      string    `json:"way"` // raw | boxd | boxd agent
	Samples  []float64 `json:"samples_ms"`
}

// Stats of a series.
type Stats struct {
	N                       int
	Min, P50, P90, P99, Max float64
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Compute returns the statistics of s.
func (s Series) Compute() Stats {
	v := append([]float64(nil), s.Samples...)
	sort.Float64s(v)
	if len(v) == 0 {
		return Stats{}
	}
	return Stats{N: len(v), Min: v[0], P50: percentile(v, 50), P90: percentile(v, 90), P99: percentile(v, 99), Max: v[len(v)-1]}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Report is one run.
type Report struct {
	Machine string            `json:"machine"`
	Started time.Time         `json:"started"`
	Series  []Series          `json:"series"`
	Facts   map[string]string `json:"facts"`
	Targets []Target          `json:"targets,omitempty"`
}

// Target is a goal a measured figure (ms) meets when it is at most Limit.
type Target struct {
	Name     string  `json:"name"`
	Goal     string  `json:"goal"`
	Measured float64 `json:"measured_ms"`
	Limit    float64 `json:"limit_ms"`
}

// Met reports whether the figure is within the limit (a missing figure is not).
func (t Target) Met() bool { return !math.IsNaN(t.Measured) && t.Measured <= t.Limit }

// add appends one sample to the series of (workload, way), creating it in order.
func (r *Report) add(workload, way string, d time.Duration) {
	for i := range r.Series {
		if r.Series[i].Workload == workload && r.Series[i].Way == way {
			r.Series[i].Samples = append(r.Series[i].Samples, ms(d))
			return
		}
	}
	r.Series = append(r.Series, Series{Workload: workload, Way: way, Samples: []float64{ms(d)}})
}

// stats of the series (workload, way); P50 etc. are NaN when there is none.
func (r *Report) stats(workload, way string) Stats {
	for _, s := range r.Series {
		if s.Workload == workload && s.Way == way {
			return s.Compute()
		}
	}
	nan := math.NaN()
	return Stats{Min: nan, P50: nan, P90: nan, P99: nan, Max: nan}
}

func (r *Report) target(t Target) { r.Targets = append(r.Targets, t) }

// Markdown writes a table per workload with the boxd/raw ratios.
func (r Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s, %s\n\n", r.Machine, r.Started.Format(time.RFC3339))
	byWorkload := map[string][]Series{}
	var order []string
	for _, s := range r.Series {
		if _, ok := byWorkload[s.Workload]; !ok {
			order = append(order, s.Workload)
		}
		byWorkload[s.Workload] = append(byWorkload[s.Workload], s)
	}
	for _, wl := range order {
		fmt.Fprintf(w, "### %s (ms)\n\n| way | n | min | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|\n", wl)
		var raw Stats
		var others []Series
		for _, s := range byWorkload[wl] {
			st := s.Compute()
			fmt.Fprintf(w, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", s.Way, st.N, st.Min, st.P50, st.P90, st.P99, st.Max)
			if s.Way == "raw" {
				raw = st
			} else {
				others = append(others, s)
			}
		}
		if raw.N > 0 && len(others) > 0 {
			fmt.Fprintln(w)
			for _, s := range others {
				st := s.Compute()
				fmt.Fprintf(w, "%s / raw: p50 %.2fx, p99 %.2fx  \n", s.Way, st.P50/raw.P50, st.P99/raw.P99)
			}
		}
		fmt.Fprintln(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "### targets\n\n| target | goal | measured (ms) | |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			verdict := "missed"
			if t.Met() {
				verdict = "met"
			}
			fmt.Fprintf(w, "| %s | %s | %.2f | %s |\n", t.Name, t.Goal, t.Measured, verdict)
		}
		fmt.Fprintln(w)
	}
	if len(r.Facts) > 0 {
		keys := make([]string, 0, len(r.Facts))
		for k := range r.Facts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "| fact | value |\n|---|---|\n")
		for _, k := range keys {
			fmt.Fprintf(w, "| %s | %s |\n", k, r.Facts[k])
		}
	}
}

package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// concurrentLoad is the "N sessions each running M execs" workload: N sessions are created at
// once, then each runs M execs of `true` one after the other, all sessions in parallel. The
// wall time covers both phases (a global creation lock would show here), every exec is a
// sample of the per-exec series, and boxd's RSS is read with the N sessions idle and sampled
// while the execs run.
type concurrentLoad struct {
	sessions, execs int
	raw             *rawAPI
	boxd            *boxdProc
	spec            func(id string, extra map[string]any) map[string]any
	add             func(workload, way string, d time.Duration)
	facts           map[string]string
	prefix          string // of the workload names ("kubernetes: ")
}

func (l *concurrentLoad) wallName() string {
	return fmt.Sprintf("%s%d sessions × %d execs (wall)", l.prefix, l.sessions, l.execs)
}

func (l *concurrentLoad) execName() string {
	return fmt.Sprintf("%s%d sessions × %d execs: one exec", l.prefix, l.sessions, l.execs)
}

// runRaw does the work through the Engine API.
func (l *concurrentLoad) runRaw(ctx context.Context) error {
	t := time.Now()
	_, ids, err := l.raw.parallelCreate(ctx, l.sessions)
	defer func() {
		for _, id := range ids {
			if id != "" {
				l.raw.remove(ctx, id)
			}
		}
	}()
	if err != nil {
		return err
	}
	durations, err := parallel(l.sessions, l.execs, func(i int) (time.Duration, error) {
		return l.raw.exec(ctx, ids[i], "true")
	})
	if err != nil {
		return err
	}
	l.add(l.wallName(), "raw", time.Since(t))
	for _, d := range durations {
		l.add(l.execName(), "raw", d)
	}
	return nil
}

// runBoxd does it through boxd, one connection per session as LangBot's concurrent
// pipelines would; way is "boxd" or "boxd agent" (the caller has set box.docker.exec_agent).
func (l *concurrentLoad) runBoxd(way, prefix string) error {
	conns := make([]*wsConn, l.sessions)
	for i := range conns {
		c, err := l.boxd.dial()
		if err != nil {
			return err
		}
		defer c.ws.Close()
		conns[i] = c
	}
	id := func(i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
	t := time.Now()
	if _, err := parallel(l.sessions, 1, func(i int) (time.Duration, error) {
		_, err := conns[i].call("box_create_session", l.spec(id(i), nil))
		return 0, err
	}); err != nil {
		return err
	}
	created := time.Since(t)
	if way == "boxd" {
		l.facts[fmt.Sprintf("boxd RSS with %d idle sessions", l.sessions)] = l.boxd.rss()
	}
	peak := l.boxd.sampleRSS()
	t = time.Now()
	durations, err := parallel(l.sessions, l.execs, func(i int) (time.Duration, error) {
		start := time.Now()
		_, err := conns[i].call("box_exec", l.spec(id(i), map[string]any{"cmd": "true"}))
		return time.Since(start), err
	})
	wall := created + time.Since(t)
	l.facts[fmt.Sprintf("%s peak RSS while %d sessions exec", way, l.sessions)] = peak()
	if err != nil {
		return err
	}
	l.add(l.wallName(), way, wall)
	for _, d := range durations {
		l.add(l.execName(), way, d)
	}
	_, err = conns[0].call("box_shutdown", map[string]any{})
	return err
}

// parallel runs fn(i) rounds times in a row for each i < n, all i at once, and returns the
// durations fn reported.
func parallel(n, rounds int, fn func(i int) (time.Duration, error)) ([]time.Duration, error) {
	var mu sync.Mutex
	var out []time.Duration
	var first error
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				d, err := fn(i)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				out = append(out, d)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return out, first
}

// rssKiB reads boxd's VmRSS.
func (b *boxdProc) rssKiB() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb float64
			fmt.Sscan(f[1], &kb)
			return kb
		}
	}
	return 0
}

// sampleRSS samples boxd's RSS every 20 ms until the returned function is called, which
// stops the sampling and reports the highest value seen.
func (b *boxdProc) sampleRSS() func() string {
	stop := make(chan struct{})
	done := make(chan float64)
	go func() {
		peak := b.rssKiB()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, b.rssKiB())
				return
			case <-t.C:
				peak = max(peak, b.rssKiB())
			}
		}
	}()
	return func() string {
		close(stop)
		return fmt.Sprintf("%.1f MiB", <-done/1024)
	}
}

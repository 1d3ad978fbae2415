//go:build integration

package docker

import (
	"io"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// BenchmarkExecWrapperOverhead measures one `sh -lc true` round trip through the backend
// (with its PID-recording wrapper) and through the bare Engine API calls it is made of, on
// the same sandbox, and through the exec agent on a second sandbox, interleaved (A B C A B C)
// so machine noise hits all alike. It reports the median of each and the wrapper's overhead:
//
//	go test -tags integration -run '^$' -bench ExecWrapperOverhead -benchtime 60x ./boxd/internal/docker/
func BenchmarkExecWrapperOverhead(b *testing.B) {
	e := newEnv(b)
	be := e.backend()
	h := e.start(be, spec("bench"))
	ab := e.backend(execPath{agent: true}.opts(b))
	ah := e.start(ab, spec("bench-agent"))
	viaAgent := func() {
		res, err := ab.Exec(e.ctx, ah, backend.ExecRequest{Argv: []string{"sh", "-lc", "true"}})
		require.NoError(b, err)
		require.Zero(b, res.ExitCode)
	}
	viaAgent() // starts the agent
	argv := []string{"sh", "-lc", "true"}
	raw := func() {
		created, err := e.cli.ContainerExecCreate(e.ctx, h.ID, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
		require.NoError(b, err)
		att, err := e.cli.ContainerExecAttach(e.ctx, created.ID, container.ExecAttachOptions{})
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, att.Reader)
		att.Close()
		code, err := be.execExitCode(e.ctx, created.ID)
		require.NoError(b, err)
		require.Zero(b, code)
	}
	wrapped := func() {
		res, err := be.Exec(e.ctx, h, backend.ExecRequest{Argv: argv})
		require.NoError(b, err)
		require.Zero(b, res.ExitCode)
	}
	var rawD, wrapD, agentD []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		raw()
		rawD = append(rawD, time.Since(start))
		start = time.Now()
		wrapped()
		wrapD = append(wrapD, time.Since(start))
		start = time.Now()
		viaAgent()
		agentD = append(agentD, time.Since(start))
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	r, w := median(rawD), median(wrapD)
	b.ReportMetric(r, "raw-p50-ms")
	b.ReportMetric(w, "backend-p50-ms")
	b.ReportMetric(w-r, "overhead-p50-ms")
	b.ReportMetric(median(agentD), "agent-p50-ms")
	b.ReportMetric(0, "ns/op")
}

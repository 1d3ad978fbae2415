//go:build integration

// Managed-process output against the project's private Docker Engine (`bash hack/docker.sh
// up`, `eval "$(bash hack/docker.sh env)"`; ci/30-boxd.sh does both), through the session
// layer on the real Docker backend.
package session_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
)

// countingBackend is the real Docker backend; it only counts what the session layer reads
// from each managed process's stdout (not a fake: every byte still comes from the engine).
type countingBackend struct {
	backend.Backend
	read []*atomic.Int64
}

type countingProcess struct {
	backend.Process
	out io.Reader
}

func (p countingProcess) Stdout() io.Reader { return p.out }

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (b *countingBackend) StartProcess(ctx context.Context, h backend.Handle, req backend.ProcessRequest) (backend.Process, error) {
	p, err := b.Backend.StartProcess(ctx, h, req)
	if err != nil {
		return nil, err
	}
	n := &atomic.Int64{}
	b.read = append(b.read, n) // process starts are serialised by the test
	return countingProcess{Process: p, out: countingReader{r: p.Stdout(), n: n}}, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// blockedOnStdout reports whether the host process pid sleeps in write(2) on its fd 1.
func blockedOnStdout(pid string) bool {
	sc, err := os.ReadFile("/proc/" + pid + "/syscall")
	return err == nil && strings.HasPrefix(string(sc), "1 0x1 ")
}

// Issue #10 item 7: 16 managed processes printing 1 MiB lines with no relay attached used to
// cost boxd 33 MiB each (32 lines in a channel plus a 1 MiB reader). Now boxd holds at most
// StdoutBufferMax of each and stops reading: the writer inside the sandbox ends up blocked
// in write(2) on its stdout, and what boxd read stays at the bound. Nothing is lost: a
// relay that attaches later gets whole lines.
func TestUnreadStdoutIsBoundedAndBlocksTheWriter(t *testing.T) {
	require.NotEmpty(t, os.Getenv("DOCKER_HOST"), "run `eval \"$(bash hack/docker.sh env)\"` (ci/30-boxd.sh does)")
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	defer cli.Close()
	scope := "session-it-" + randHex(6)
	t.Cleanup(func() {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", docker.LabelScope+"="+scope))})
		if err == nil {
			for _, c := range list {
				_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
		}
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	real, err := docker.New(ctx, docker.Options{InstanceID: randHex(6), Scope: scope, Logger: log})
	require.NoError(t, err)
	require.NoError(t, real.Available(ctx), "the Docker Engine at DOCKER_HOST does not answer")
	be := &countingBackend{Backend: real}
	m := session.NewManager(be, config.DefaultLimits, log)
	spec, err := session.ParseSpec(json.RawMessage(`{"session_id":"flood","image":"langbot-k8s/sandbox:local","persistent":true}`))
	require.NoError(t, err)
	s, err := m.GetOrCreate(ctx, "flood", spec)
	require.NoError(t, err)

	const procs, lineLen = 16, 1<<20 - 1 // a line of 1 MiB with its newline
	// One long-lived writer per process (awk; busybox runs it in the process of the shell that
	// exec'd it, so ps shows the shell's command line), so its blocked write shows in /proc.
	script := fmt.Sprintf(`BEGIN { s = sprintf("%%%ds", ""); while (1) print s }`, lineLen)
	var ps []*session.Process
	for i := range procs {
		sp, err := m.StartProcess(ctx, "flood", session.ProcessSpec{ProcessID: fmt.Sprint("p", i), Command: "awk", Args: []string{script}, Cwd: "/workspace"})
		require.NoError(t, err)
		ps = append(ps, sp)
	}

	// Give the writers every chance to push more: stop looking once all 16 sleep in write(2)
	// on their stdout and boxd read nothing more while that was being checked.
	steady := false
	for range 500 {
		before := total(be.read)
		top, err := cli.ContainerTop(ctx, s.Handle.ID, nil)
		require.NoError(t, err)
		blocked := 0
		for _, p := range top.Processes {
			if strings.Contains(strings.Join(p, " "), "BEGIN { s = sprintf") && blockedOnStdout(p[pidColumn(t, top.Titles)]) {
				blocked++
			}
		}
		if blocked == procs && total(be.read) == before {
			steady = true
			break
		}
		if total(be.read) > procs*session.StdoutBufferMax {
			break // already over the bound: no need to wait for more
		}
	}
	for i, p := range ps {
		assert.LessOrEqual(t, be.read[i].Load(), int64(session.StdoutBufferMax), "process %d: stdout boxd read with no relay attached", i)
		assert.LessOrEqual(t, p.StdoutBuffered(), int64(session.StdoutBufferMax), "process %d: stdout boxd holds", i)
	}
	assert.True(t, steady, "every writer ends up blocked on its stdout (read: %d bytes)", total(be.read))

	// A relay attaching later gets everything in order: a 1 MiB line is over the ~1 MiB
	// message cap (maxLine), so it arrives in pieces of at most 64 KiB, as the reference
	// sends it; reading moves the writer on.
	p := ps[0]
	p.Attach <- struct{}{}
	for got := 0; got < 3*lineLen; {
		piece := <-p.Lines
		assert.LessOrEqual(t, len(piece), 64<<10)
		assert.Equal(t, "", strings.Trim(piece, " "), "only the line's own bytes arrive")
		got += len(piece)
	}
	<-p.Attach

	// Stopping processes whose output nobody reads does not hang on the full pipe.
	for i := range procs {
		require.NoError(t, m.StopProcess(ctx, "flood", fmt.Sprint("p", i)))
	}
	m.Shutdown(ctx, true)
}

func total(ns []*atomic.Int64) int64 {
	var t int64
	for _, n := range ns {
		t += n.Load()
	}
	return t
}

func pidColumn(t *testing.T, titles []string) int {
	for i, title := range titles {
		if title == "PID" {
			return i
		}
	}
	require.Fail(t, "container top has no PID column", "%v", titles)
	return 0
}

package kube

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent/agenttest"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// localSandbox is the isolated exec path without a cluster: a real exec agent (agent.Serve)
// on this machine as the Pod's, reached over pipes, and the built `boxagent sync` binary as the
// sandbox end. The sandbox's mount paths are absolute paths under a temporary directory (the
// sandbox end resolves them under /, as in a Pod). The Kubernetes client is client-go's fake,
// holding no Pod: it is asked only whether the Pod runs, after something failed.
type localSandbox struct {
	b   *Backend
	h   backend.Handle
	ws  string // the tenant workspace on boxd's side
	sbx string // the sandbox's /workspace
}

func newLocalSandbox(t *testing.T, limits map[string]any) *localSandbox {
	t.Helper()
	bin, err := agenttest.Build(t.TempDir())
	require.NoError(t, err)
	root := t.TempDir()
	raw := map[string]any{"workspace_mode": "isolated"}
	if limits != nil {
		raw["workspace_sync"] = limits
	}
	set := testSettings(t, raw)
	b := &Backend{cs: fake.NewClientset(), set: set, log: slog.New(slog.NewTextHandler(io.Discard, nil)), sandboxes: map[string]*sandbox{},
		opts: Options{InstanceID: "i", AllowedMountRoots: func() []string { return []string{root} }, HostRoot: func() string { return root }}}
	b.ws.syncArgv = []string{bin, wsync.AgentSubcommand}

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() {
		_ = agent.Serve(inR, outW, os.Environ())
		outW.Close()
	}()
	c, err := agent.Dial(context.Background(), outR, inW)
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Close()
		inW.Close()
	})
	b.sandboxes["pod"] = &sandbox{client: c}

	ls := &localSandbox{b: b, h: backend.Handle{ID: "pod"}, ws: filepath.Join(root, "ws"), sbx: filepath.Join(root, "sandbox", "workspace")}
	spec := backend.SessionSpec{PhysicalID: "ws-1", Image: "x", HostPath: ls.ws, HostPathMode: backend.MountRW, MountPath: ls.sbx}
	w, err := b.openWorkspace(spec)
	require.NoError(t, err)
	b.ws.put("pod", w)
	t.Cleanup(b.ws.closeAll)
	return ls
}

func (ls *localSandbox) run(ctx context.Context, script string) (localResult, error) {
	var out, errb bytes.Buffer
	res, err := ls.b.Exec(ctx, ls.h, backend.ExecRequest{Argv: []string{"sh", "-c", script}, Env: []backend.EnvVar{{Key: "W", Value: ls.sbx}},
		Stdout: &out, Stderr: &errb})
	return localResult{res.ExitCode, out.String(), errb.String()}, err
}

func TestIsolatedExecLocal(t *testing.T) {
	ls := newLocalSandbox(t, map[string]any{"pull_max_file_bytes": 1024})
	ctx := context.Background()
	require.NoError(t, os.WriteFile(filepath.Join(ls.ws, "in.txt"), []byte("from boxd\n"), 0o644))

	r, err := ls.run(ctx, `cat "$W/in.txt"; echo out > "$W/out.txt"; exit 3`)
	require.NoError(t, err)
	assert.Equal(t, localResult{code: 3, stdout: "from boxd\n"}, r)
	got, err := os.ReadFile(filepath.Join(ls.ws, "out.txt"))
	require.NoError(t, err)
	assert.Equal(t, "out\n", string(got), "back before the result")

	// The spare started for the next exchange is the one it uses.
	sp := ls.b.ws.spares["pod"]
	require.NotNil(t, sp, "a spare waits for the next exchange")
	<-sp.ready
	require.NoError(t, sp.err)
	require.NoError(t, os.WriteFile(filepath.Join(ls.ws, "in.txt"), []byte("edited\n"), 0o644))
	r, err = ls.run(ctx, `cat "$W/in.txt"`)
	require.NoError(t, err)
	assert.Equal(t, "edited\n", r.stdout)
	select {
	case <-sp.p.Done():
	case <-time.After(time.Minute):
		t.Fatal("the spare was not used")
	}

	// A spare killed in the sandbox is replaced by a new process.
	sp = ls.b.ws.spares["pod"]
	require.NotNil(t, sp)
	<-sp.ready
	require.NoError(t, sp.p.Signal(ctx, syscall.SIGKILL))
	<-sp.p.Done()
	r, err = ls.run(ctx, `echo again > "$W/again.txt"`)
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(ls.ws, "again.txt"))

	// A command cancelled on its timeout: its write is copied back before Exec returns.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = ls.run(cctx, `echo late > "$W/late.txt"; sleep 100`)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	got, err = os.ReadFile(filepath.Join(ls.ws, "late.txt"))
	require.NoError(t, err)
	assert.Equal(t, "late\n", string(got))

	// A pull over a limit is the exec's BoxError; nothing comes back.
	_, err = ls.run(ctx, `head -c 2000 /dev/zero > "$W/big"`)
	var be *backend.Error
	require.ErrorAs(t, err, &be)
	assert.Contains(t, be.Message, "pull_max_file_bytes")
	assert.NoFileExists(t, filepath.Join(ls.ws, "big"))

	// A conflict (both sides changed one file) is noted at the end of stderr.
	_, err = ls.run(ctx, `rm "$W/big"`)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ls.ws, "c.txt"), []byte("v1\n"), 0o644))
	_, err = ls.run(ctx, `true`)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ls.sbx, "c.txt"), []byte("sandbox\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(ls.ws, "c.txt"), []byte("boxd!\n"), 0o644))
	r, err = ls.run(ctx, `echo err >&2`)
	require.NoError(t, err)
	assert.Contains(t, r.stderr, "err\n\n[boxd workspace sync] conflict on "+ls.sbx+"/c.txt")
}

type localResult struct {
	code           int
	stdout, stderr string
}

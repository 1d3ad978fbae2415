//go:build integration_kube

package kube

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// isolatedSpec is a session whose tenant workspace (rw) and a ro skill live on boxd's disk
// (here: directories of this machine under the test's claim directory, which the Pod does not
// mount in isolated mode).
func isolatedSpec(t *testing.T, c *cluster, id string) (backend.SessionSpec, string, string) {
	t.Helper()
	ws := filepath.Join(c.claimDir, "iso", id, "ws")
	skill := filepath.Join(c.claimDir, "iso", id, "skill")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	require.NoError(t, os.MkdirAll(skill, 0o755))
	s := spec(id)
	s.HostPath, s.HostPathMode, s.MountPath = ws, backend.MountRW, "/workspace"
	s.ExtraMounts = []backend.Mount{{HostPath: skill, MountPath: "/workspace/.skills/demo", Mode: backend.MountRO}}
	return s, ws, skill
}

func TestKubeIsolatedWorkspace(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", map[string]any{"workspace_mode": "isolated",
		"workspace_sync": map[string]any{"push_max_files": 20, "pull_max_file_bytes": 64 << 10}})
	ctx := context.Background()
	s, ws, skill := isolatedSpec(t, c, "ws-0123456789abcdef01234567-g1-iso")
	s.ReadOnlyRootfs = true
	require.NoError(t, os.WriteFile(filepath.Join(ws, "in.txt"), []byte("from boxd\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(skill, "SKILL.md"), []byte("skill\n"), 0o644))

	h, err := b.Start(ctx, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop(context.Background(), h) })

	// No claim in the Pod: an emptyDir at /workspace.
	p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, h.ID, metav1.GetOptions{})
	require.NoError(t, err)
	for _, v := range p.Spec.Volumes {
		assert.Nil(t, v.PersistentVolumeClaim, "volume %s", v.Name)
	}
	var mounted []string
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		mounted = append(mounted, m.MountPath)
	}
	assert.Contains(t, mounted, "/workspace")

	// In before the command, out before the result.
	r, err := run(t, ctx, b, h, `cat /workspace/in.txt /workspace/.skills/demo/SKILL.md; mkdir -p /workspace/out; echo from-sandbox > /workspace/out/o.txt; rm /workspace/in.txt`)
	require.NoError(t, err)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "from boxd\nskill\n", r.stdout)
	got, err := os.ReadFile(filepath.Join(ws, "out", "o.txt"))
	require.NoError(t, err)
	assert.Equal(t, "from-sandbox\n", string(got))
	assert.NoFileExists(t, filepath.Join(ws, "in.txt"), "a deletion in the sandbox comes back")
	assert.NoFileExists(t, filepath.Join(skill, "x"))

	// Incremental: a change on boxd's side reaches the next command.
	require.NoError(t, os.WriteFile(filepath.Join(ws, "out", "o.txt"), []byte("edited by boxd\n"), 0o644))
	r, err = run(t, ctx, b, h, `cat /workspace/out/o.txt`)
	require.NoError(t, err)
	assert.Equal(t, "edited by boxd\n", r.stdout)

	// A command cancelled on its timeout: what it wrote before is still copied back.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = run(t, cctx, b, h, `echo late > /workspace/late.txt; sleep 1000`)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	got, err = os.ReadFile(filepath.Join(ws, "late.txt"))
	require.NoError(t, err)
	assert.Equal(t, "late\n", string(got))

	// A pull over a limit: BoxError with wsync's message, nothing copied back.
	_, err = run(t, ctx, b, h, `head -c 70000 /dev/zero > /workspace/big.bin`)
	var be *backend.Error
	require.ErrorAs(t, err, &be)
	var le *wsync.LimitError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "pull_max_file_bytes", le.Limit)
	assert.Contains(t, be.Message, "workspace sync from the sandbox refused")
	assert.NoFileExists(t, filepath.Join(ws, "big.bin"))
	_, err = run(t, ctx, b, h, `rm /workspace/big.bin`)
	require.NoError(t, err)

	// A push over a limit: refused before the command runs.
	for i := 0; i < 25; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(ws, "f"+strings.Repeat("x", i)), nil, 0o644))
	}
	r, err = run(t, ctx, b, h, `echo ran > /workspace/ran.txt`)
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "push_max_files", le.Limit)
	assert.Contains(t, err.Error(), "workspace sync to the sandbox refused")
	for i := 0; i < 25; i++ {
		require.NoError(t, os.Remove(filepath.Join(ws, "f"+strings.Repeat("x", i))))
	}
	r, err = run(t, ctx, b, h, `ls /workspace/ran.txt 2>&1 || true`)
	require.NoError(t, err)
	assert.Contains(t, r.stdout, "No such file", "the refused command did not run")

	// A managed process sees the workspace pushed before it starts; a path both sides change
	// before the next exec keeps both versions and the exec's stderr says so.
	require.NoError(t, os.WriteFile(filepath.Join(ws, "c.txt"), []byte("v1\n"), 0o644))
	proc, err := b.StartProcess(ctx, h, backend.ProcessRequest{Argv: []string{"sh", "-c", `cat /workspace/c.txt; read x; echo sandbox > /workspace/c.txt; echo done`}})
	require.NoError(t, err)
	out := bufio.NewReader(proc.Stdout())
	assert.Equal(t, "v1\n", readLine(t, out))
	require.NoError(t, os.WriteFile(filepath.Join(ws, "c.txt"), []byte("boxd\n"), 0o644))
	_, err = proc.Stdin().Write([]byte("go\n"))
	require.NoError(t, err)
	assert.Equal(t, "done\n", readLine(t, out))
	code, err := proc.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	r, err = run(t, ctx, b, h, `true`)
	require.NoError(t, err)
	assert.Contains(t, r.stderr, "[boxd workspace sync] conflict on /workspace/c.txt")
	got, err = os.ReadFile(filepath.Join(ws, "c.txt"))
	require.NoError(t, err)
	assert.Equal(t, "boxd\n", string(got), "boxd's version stays in place")
	copies, err := filepath.Glob(filepath.Join(ws, "c.txt.sandbox-conflict-*"))
	require.NoError(t, err)
	require.Len(t, copies, 1, "the sandbox's version is kept beside it")
	got, err = os.ReadFile(copies[0])
	require.NoError(t, err)
	assert.Equal(t, "sandbox\n", string(got))
}

package wsync

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent/agenttest"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// The sandbox end as the integration runs it: the static `boxagent sync` binary, one process
// per exchange, its stdin and stdout the Conn (here through os/exec instead of the exec
// agent). Mount paths are absolute paths of this machine under a temporary directory.
func TestBoxagentSyncBinary(t *testing.T) {
	bin, err := agenttest.Build(t.TempDir())
	require.NoError(t, err)
	out, err := exec.Command(bin, AgentSubcommand, "extra").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "takes no arguments")

	sbx := t.TempDir()
	hostWS, hostSkill := t.TempDir(), t.TempDir()
	open := func(p string) *os.File {
		d, err := os.Open(p)
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		return d
	}
	s, err := NewSession([]Tree{
		{HostPath: hostWS, MountPath: sbx + "/workspace", Mode: backend.MountRW, Dir: open(hostWS)},
		{HostPath: hostSkill, MountPath: sbx + "/workspace/.skills/demo", Mode: backend.MountRW, Dir: open(hostSkill)},
	}, Options{NoFsync: true, Limits: Limits{PullMaxFileBytes: 64}})
	require.NoError(t, err)
	defer s.Close()
	dial := func(ctx context.Context) (*Conn, error) {
		cmd := exec.CommandContext(ctx, bin, AgentSubcommand)
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &Conn{Stdin: in, Stdout: stdout, Done: func(failed bool) error {
			if failed {
				_ = cmd.Process.Kill()
			}
			return cmd.Wait()
		}}, nil
	}
	write(t, filepath.Join(hostWS, "a.txt"), "a", 0o644)
	write(t, filepath.Join(hostSkill, "SKILL.md"), "s", 0o644)
	_, err = s.Push(t.Context(), dial)
	require.NoError(t, err)
	assert.Equal(t, "a", read(t, sbx+"/workspace/a.txt"))
	assert.Equal(t, "s", read(t, sbx+"/workspace/.skills/demo/SKILL.md"))

	write(t, sbx+"/workspace/out/b.txt", "b", 0o644)
	write(t, sbx+"/workspace/a.txt", "sandbox", 0o644)
	write(t, filepath.Join(hostWS, "a.txt"), "host", 0o644)
	rep, err := s.Pull(t.Context(), dial)
	require.NoError(t, err)
	assert.Equal(t, "b", read(t, filepath.Join(hostWS, "out/b.txt")))
	assert.Equal(t, "host", read(t, filepath.Join(hostWS, "a.txt")))
	assert.Equal(t, "sandbox", read(t, filepath.Join(hostWS, rep.Trees[0].Conflicts[0].Copy)))

	write(t, sbx+"/workspace/huge", string(make([]byte, 65)), 0o644)
	_, err = s.Pull(t.Context(), dial)
	var le *LimitError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "pull_max_file_bytes", le.Limit)
	assert.NoFileExists(t, filepath.Join(hostWS, "huge"))
}

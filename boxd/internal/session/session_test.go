package session

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

func TestParseSpecDefaultsAndRules(t *testing.T) {
	s, err := ParseSpec(json.RawMessage(`{"session_id":" p1 ","cmd":" ls "}`))
	require.NoError(t, err)
	assert.Equal(t, "p1", s.SessionID)
	assert.Equal(t, "ls", s.Cmd)
	assert.Equal(t, "/workspace", s.Workdir)
	assert.Equal(t, 30, s.TimeoutSec)
	assert.Equal(t, DefaultImage, s.Image)
	assert.Equal(t, "off", s.Network)
	assert.Equal(t, 1.0, s.CPUs)
	assert.Equal(t, 512, s.MemoryMB)
	assert.True(t, s.ReadOnlyRootfs)

	s, err = ParseSpec(json.RawMessage(`{"session_id":"p","mount_path":"/data","host_path":"/srv/x","timeout_sec":"45","persistent":"yes","env":{"B":"1","A":"2"}}`))
	require.NoError(t, err)
	assert.Equal(t, "/data", s.Workdir, "workdir defaults to mount_path")
	assert.Equal(t, 45, s.TimeoutSec, "numeric strings are accepted")
	assert.True(t, s.Persistent)
	assert.Equal(t, []backend.EnvVar{{Key: "B", Value: "1"}, {Key: "A", Value: "2"}}, s.Env, "env keeps insertion order")

	bad := map[string]string{
		`{"cmd":"x"}`:                                                             "session_id",
		`{"session_id":"p","workdir":"rel"}`:                                      "workdir must be an absolute path inside the sandbox",
		`{"session_id":"p","timeout_sec":0}`:                                      "timeout_sec must be greater than 0",
		`{"session_id":"p","timeout_sec":1.5}`:                                    "valid integer",
		`{"session_id":"p","network":"maybe"}`:                                    "network",
		`{"session_id":"p","host_path":"rel"}`:                                    "host_path must be an absolute host path",
		`{"session_id":"p","cpus":0}`:                                             "cpus must be greater than 0",
		`{"session_id":"p","memory_mb":31}`:                                       "memory_mb must be at least 32",
		`{"session_id":"p","pids_limit":0}`:                                       "pids_limit must be at least 1",
		`{"session_id":"p","workspace_quota_mb":-1}`:                              "workspace_quota_mb must be greater than or equal to 0",
		`{"session_id":"p","env":{"A":1}}`:                                        "valid string",
		`{"session_id":"p","skill_name":"a b"}`:                                   "skill_name can only contain",
		`{"session_id":"p","host_path":"/srv","workdir":"/tmp"}`:                  "workdir must stay under mount_path when host_path is provided",
		`{"session_id":"p","extra_mounts":[{"host_path":"/a","mount_path":"x"}]}`: "mount_path must be an absolute path inside the sandbox",
		`{"session_id":5}`:                                                        "valid string",
	}
	for in, want := range bad {
		_, err := ParseSpec(json.RawMessage(in))
		require.Error(t, err, in)
		assert.True(t, strings.HasPrefix(err.Error(), "BoxValidationError: "), err.Error())
		assert.Contains(t, err.Error(), want, in)
	}
}

func TestMountsKeyIgnoresOrderDuplicatesAndNone(t *testing.T) {
	a := Spec{ExtraMounts: []backend.Mount{{HostPath: "/a", MountPath: "/x", Mode: "ro"}, {HostPath: "/b", MountPath: "/y", Mode: "rw"}, {HostPath: "/c", MountPath: "/z", Mode: "none"}}}
	b := Spec{ExtraMounts: []backend.Mount{{HostPath: "/b", MountPath: "/y", Mode: "rw"}, {HostPath: "/a", MountPath: "/x", Mode: "ro"}, {HostPath: "/a", MountPath: "/x", Mode: "ro"}}}
	assert.Equal(t, a.mountsKey(), b.mountsKey())
	assert.NotEqual(t, a.mountsKey(), Spec{}.mountsKey())
}

func TestCaptureClipsAndTrims(t *testing.T) {
	var c capture
	_, _ = c.Write([]byte("  hi \n"))
	assert.Equal(t, "hi", c.Text())
	var big capture
	chunk := strings.Repeat("a", 1000)
	for i := 0; i < 1100; i++ {
		_, _ = big.Write([]byte(chunk))
	}
	txt := big.Text()
	assert.Len(t, strings.TrimSuffix(txt, "\n... [raw output clipped at 1048576 bytes, 51424 bytes discarded]"), OutputCap)
	var bad capture
	_, _ = bad.Write([]byte{'o', 'k', 0xff})
	assert.Equal(t, "ok\uFFFD", bad.Text())
}

// relayedProcess is a process whose stdout pump runs on r, with the test as its attached
// relay and its exit already recorded (the pump still delivers to an attached relay).
func relayedProcess(r io.Reader) *Process {
	p := &Process{Lines: make(chan string), Attach: make(chan struct{}, 1), done: make(chan struct{}), discard: make(chan struct{})}
	p.Attach <- struct{}{}
	close(p.done)
	go p.pumpStdout(r)
	return p
}

func TestPumpStdoutFraming(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	exact := strings.Repeat("y", maxLine)
	// "é" (2 bytes) straddling the point where an over-long line is flushed.
	split := strings.Repeat("z", maxLine) + "é" + strings.Repeat("w", 100)
	in := "{\"id\":1}\n\n{\"id\":2}\r\n" + long + "\n" + exact + "\n" + split + "\nbad\xff\ntail"
	p := relayedProcess(strings.NewReader(in))
	var got []string
	for m := range p.Lines {
		got = append(got, m)
		assert.LessOrEqual(t, p.StdoutBuffered(), int64(StdoutBufferMax))
	}
	require.GreaterOrEqual(t, len(got), 8)
	assert.Equal(t, `{"id":1}`, got[0], "one line per message, without the newline")
	assert.Equal(t, "{\"id\":2}\r", got[1], "empty lines are skipped, \\r is left alone")
	assert.Equal(t, "tail", got[len(got)-1], "a partial last line is flushed at EOF")
	assert.Equal(t, "bad\uFFFD", got[len(got)-2], "invalid UTF-8 is replaced")
	var pieces []string
	i := 2
	for ; i < len(got) && got[i] != exact; i++ {
		pieces = append(pieces, got[i])
		assert.LessOrEqual(t, len(got[i]), longLinePiece, "an over-long line arrives in pieces of at most 64 KiB")
	}
	assert.Equal(t, long, strings.Join(pieces, ""), "nothing of the over-long line is lost")
	require.Less(t, i, len(got), "a line of exactly maxLine bytes is one message")
	joined := strings.Join(got[i+1:len(got)-2], "")
	assert.Equal(t, split, joined, "a code point at the flush point is not split")
	for _, piece := range got[i+1 : len(got)-2] {
		assert.True(t, utf8.ValidString(piece), "every piece is valid UTF-8")
	}
	assert.Equal(t, int64(0), p.StdoutBuffered(), "everything read was handed over")
}

func TestPumpStdoutDropsWhenStopped(t *testing.T) {
	p := &Process{Lines: make(chan string), Attach: make(chan struct{}, 1), done: make(chan struct{}), discard: make(chan struct{})}
	r := strings.NewReader(strings.Repeat("line\n", 100000))
	go p.pumpStdout(r)
	require.Equal(t, "line", <-p.Lines, "nobody attached: the pump waits for a relay")
	close(p.discard) // boxd stops the process: the rest is read and dropped, so the exit is not held up
	close(p.done)
	for range p.Lines {
	}
	assert.Equal(t, 0, r.Len(), "stdout was read to its end")
	assert.Equal(t, int64(0), p.StdoutBuffered())
}

// eofReader reports when its reader returned EOF.
type eofReader struct {
	r   io.Reader
	eof chan struct{}
}

func (e *eofReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err == io.EOF {
		close(e.eof)
	}
	return n, err
}

func TestPumpStdoutDropsAfterExitWithoutRelay(t *testing.T) {
	p := &Process{Lines: make(chan string), Attach: make(chan struct{}, 1), done: make(chan struct{}), discard: make(chan struct{})}
	close(p.done) // exited, no relay holds the attach slot: nothing is kept for one
	r := &eofReader{r: strings.NewReader(strings.Repeat("line\n", 100000)), eof: make(chan struct{})}
	go p.pumpStdout(r)
	<-r.eof
	_, open := <-p.Lines
	assert.False(t, open, "no message is kept for a relay that can no longer attach")
	assert.Empty(t, p.Attach, "the attach slot is free again")
	assert.Equal(t, int64(0), p.StdoutBuffered())
}

func TestConflictMessagesRenderPythonValues(t *testing.T) {
	hp := "/srv/a"
	s := &Session{Physical: "ws-x-g1-p", Spec: Spec{Network: "off", Image: "i", HostPath: &hp, HostPathMode: "rw", MountPath: "/workspace", CPUs: 1, MemoryMB: 512, PidsLimit: 128, ReadOnlyRootfs: true}}
	n := s.Spec
	n.CPUs = 2
	assert.EqualError(t, compatible(s, n), "BoxSessionConflictError: Box session ws-x-g1-p already exists with cpus=1.0")
	n = s.Spec
	n.HostPath = nil
	assert.EqualError(t, compatible(s, n), "BoxSessionConflictError: Box session ws-x-g1-p already exists with host_path=/srv/a")
	n = s.Spec
	n.ReadOnlyRootfs = false
	assert.EqualError(t, compatible(s, n), "BoxSessionConflictError: Box session ws-x-g1-p already exists with read_only_rootfs=True")
	assert.NoError(t, compatible(s, s.Spec))
}

func TestParseProcessSpec(t *testing.T) {
	s, err := ParseProcessSpec(json.RawMessage(`{"command":"npx","args":["-y","srv"],"cwd":"/workspace"}`))
	require.NoError(t, err)
	assert.Equal(t, "default", s.ProcessID)
	_, err = ParseProcessSpec(json.RawMessage(`{"command":"  "}`))
	assert.ErrorContains(t, err, "command must not be empty")
	_, err = ParseProcessSpec(json.RawMessage(`{"command":"x","cwd":"rel"}`))
	assert.ErrorContains(t, err, "cwd must be an absolute path inside the sandbox")
}

package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testDaemon is an Agent in daemon mode in this process (commands are real processes of the
// test machine), listening on an abstract unix socket of its own.
type testDaemon struct {
	a    *Agent
	name string

	mu    sync.Mutex
	conns []*net.UnixConn
	gate  chan struct{} // non-nil: dials wait until it is closed
}

func abstractName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "@boxd-agent-test-" + hex.EncodeToString(b[:])
}

func startDaemon(t *testing.T, detach time.Duration) *testDaemon {
	t.Helper()
	d := &testDaemon{a: NewAgent(Options{Environ: os.Environ(), DetachTimeout: detach, Logf: t.Logf}), name: abstractName()}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.name, Net: "unix"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.a.Listen(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-served
		d.a.Shutdown()
	})
	return d
}

// dialer opens real connections to the daemon (waiting while a drop holds the gate).
func (d *testDaemon) dialer() Dialer {
	return func(ctx context.Context) (Conn, error) {
		d.mu.Lock()
		gate := d.gate
		d.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return Conn{}, ctx.Err()
			}
		}
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.name, Net: "unix"})
		if err != nil {
			return Conn{}, err
		}
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
		return Conn{R: c, W: c, Close: func() { _ = c.Close() }}, nil
	}
}

// drop closes the client's current connection for real, as a dropped exec stream does; new
// connections wait until reconnect is called.
func (d *testDaemon) drop(t *testing.T) (reconnect func()) {
	t.Helper()
	gate := make(chan struct{})
	d.mu.Lock()
	d.gate = gate
	require.NotEmpty(t, d.conns)
	c := d.conns[len(d.conns)-1]
	d.mu.Unlock()
	require.NoError(t, c.Close())
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			d.gate = nil
			d.mu.Unlock()
			close(gate)
		})
	}
}

func (d *testDaemon) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// state returns a copy of what the daemon holds of command id: bytes read from its stdout
// and not acknowledged, whether it is done, and whether it is known at all.
func (d *testDaemon) state(id uint32) (buffered int, produced uint64, done, known bool) {
	d.a.mu.Lock()
	defer d.a.mu.Unlock()
	p := d.a.procs[id]
	if p == nil {
		return 0, 0, false, false
	}
	return len(p.out[0].data), p.out[0].produced(), p.done, true
}

func connect(t *testing.T, d *testDaemon) *Client {
	t.Helper()
	c, err := Connect(context.Background(), d.dialer())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	require.NoError(t, err)
	return l
}

func TestProcessStdio(t *testing.T) {
	d := startDaemon(t, time.Minute)
	c := connect(t, d)
	big := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB: beyond both windows
	cases := []struct {
		name   string
		script string
		stdin  string
		close  bool           // close stdin after writing it
		signal syscall.Signal // sent once the first stdout line arrived
		stdout string
		stderr string
		code   int
	}{
		{name: "stdin echo, close gives EOF", script: "cat", stdin: "hello\nworld\n", close: true, stdout: "hello\nworld\n"},
		{name: "stdin close is end of input", script: "cat >/dev/null; echo eof", close: true, stdout: "eof\n"},
		{name: "large stdin through the windows", script: "cat", stdin: big, close: true, stdout: big},
		{name: "exit status and stderr", script: "echo out; echo err >&2; exit 7", stdout: "out\n", stderr: "err\n", code: 7},
		{name: "SIGTERM to the group, trapped", script: `trap 'echo trapped; exit 42' TERM; echo ready; sleep 1000 & wait`,
			signal: syscall.SIGTERM, stdout: "ready\ntrapped\n", code: 42},
		{name: "SIGKILL: 128+9", script: "echo ready; exec sleep 1000", signal: syscall.SIGKILL, stdout: "ready\n", code: 137},
		{name: "SIGTERM untrapped: 128+15", script: "echo ready; exec sleep 1000", signal: syscall.SIGTERM, stdout: "ready\n", code: 143},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, err := c.Start(ctx, sh(tc.script))
			require.NoError(t, err)
			var stderr bytes.Buffer
			errDone := make(chan struct{})
			go func() { _, _ = io.Copy(&stderr, p.Stderr()); close(errDone) }()
			writeDone := make(chan error, 1)
			go func() {
				_, err := io.WriteString(p.Stdin(), tc.stdin)
				if err == nil && tc.close {
					err = p.Stdin().Close()
				}
				writeDone <- err
			}()
			out := bufio.NewReader(p.Stdout())
			var stdout strings.Builder
			if tc.signal != 0 {
				stdout.WriteString(readLine(t, out))
				require.NoError(t, p.Signal(ctx, tc.signal))
			}
			_, err = io.Copy(&stdout, out)
			require.NoError(t, err)
			code, err := p.Wait(ctx)
			require.NoError(t, err)
			<-errDone
			require.NoError(t, <-writeDone)
			assert.Equal(t, tc.stdout, stdout.String())
			assert.Equal(t, tc.stderr, stderr.String())
			assert.Equal(t, tc.code, code)
		})
	}
}

// TestReattachResumesOutputAndStdin: a connection is dropped for real while a process runs;
// the process goes on producing output while no connection can be opened, stdin written
// meanwhile is held, and after the re-attach every byte arrives exactly once, stdin included,
// and the exit code with it.
func TestReattachResumesOutputAndStdin(t *testing.T) {
	d := startDaemon(t, time.Minute)
	c := connect(t, d)
	dir := t.TempDir()
	goFifo, doneFifo := filepath.Join(dir, "go"), filepath.Join(dir, "done")
	require.NoError(t, syscall.Mkfifo(goFifo, 0o600))
	require.NoError(t, syscall.Mkfifo(doneFifo, 0o600))
	ctx := context.Background()
	p, err := c.Start(ctx, sh(fmt.Sprintf(`read first; echo "got $first"; cat %s >/dev/null; seq 1 100000; echo produced > %s; read second; echo "got $second"; exit 3`, goFifo, doneFifo)))
	require.NoError(t, err)
	_, err = io.WriteString(p.Stdin(), "one\n")
	require.NoError(t, err)
	out := bufio.NewReader(p.Stdout())
	require.Equal(t, "got one\n", readLine(t, out))

	reconnect := d.drop(t)
	// Output produced while disconnected: the process goes on once told to, and says when
	// it has written everything (both FIFOs block until the other side opens them).
	require.NoError(t, os.WriteFile(goFifo, []byte("go\n"), 0o600))
	produced, err := os.ReadFile(doneFifo)
	require.NoError(t, err)
	require.Equal(t, "produced\n", string(produced))
	_, err = io.WriteString(p.Stdin(), "two\n") // held by boxd while disconnected
	require.NoError(t, err)
	assert.False(t, c.Connected())
	reconnect()

	rest, err := io.ReadAll(out)
	require.NoError(t, err)
	assert.Equal(t, seq(100000)+"got two\n", string(rest))
	code, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, code)
	assert.Equal(t, 2, d.dials(), "one connection before the drop, one after")
	// The Release that lets the agent forget the command is queued by Wait and sent by the
	// client's flush loop: the agent learns of it shortly after Wait returns.
	assert.Eventually(t, func() bool {
		_, _, _, known := d.state(p.cl.id)
		return !known
	}, 10*time.Second, 5*time.Millisecond, "the exit was collected: the agent forgot the command")
}

// TestReattachMidStream drops the connection while a process's output streams (more than the
// window, so some is in flight, some buffered by boxd, some held by the agent): nothing is lost
// or repeated.
func TestReattachMidStream(t *testing.T) {
	want := seq(400000) // 2.7 MB
	for _, cut := range []int{1, 100 << 10, 1500 << 10} {
		t.Run(strconv.Itoa(cut), func(t *testing.T) {
			d := startDaemon(t, time.Minute)
			c := connect(t, d)
			p, err := c.Start(context.Background(), sh("seq 1 400000; echo end >&2"))
			require.NoError(t, err)
			got := make([]byte, cut)
			_, err = io.ReadFull(p.Stdout(), got)
			require.NoError(t, err)
			d.drop(t)()
			rest, err := io.ReadAll(p.Stdout())
			require.NoError(t, err)
			assert.Equal(t, want, string(got)+string(rest))
			stderr, err := io.ReadAll(p.Stderr())
			require.NoError(t, err)
			assert.Equal(t, "end\n", string(stderr))
			code, err := p.Wait(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 0, code)
			assert.Equal(t, 2, d.dials())
		})
	}
}

// TestRunSurvivesADrop: a box_exec command whose stream drops completes on the next one.
func TestRunSurvivesADrop(t *testing.T) {
	d := startDaemon(t, time.Minute)
	c := connect(t, d)
	dir := t.TempDir()
	goFifo := filepath.Join(dir, "go")
	require.NoError(t, syscall.Mkfifo(goFifo, 0o600))
	started := &signalWriter{line: make(chan string, 1)}
	var out syncBuffer
	type ran struct {
		code int
		err  error
	}
	done := make(chan ran, 1)
	go func() {
		code, err := c.Run(context.Background(), sh("echo started; cat "+goFifo+"; seq 1 1000; exit 4"),
			writerFunc(func(p []byte) (int, error) { _, _ = started.Write(p); return out.Write(p) }), nil)
		done <- ran{code, err}
	}()
	require.Equal(t, "started\n", <-started.line)
	reconnect := d.drop(t)
	require.NoError(t, os.WriteFile(goFifo, []byte("fifo\n"), 0o600))
	reconnect()
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, 4, r.code)
	assert.Equal(t, "started\nfifo\n"+seq(1000), out.String())
}

// TestExitKeptUntilCollected: a process that exits while no connection exists reports its
// exit code after the re-attach.
func TestExitKeptUntilCollected(t *testing.T) {
	d := startDaemon(t, time.Minute)
	c := connect(t, d)
	goFifo := filepath.Join(t.TempDir(), "go")
	require.NoError(t, syscall.Mkfifo(goFifo, 0o600))
	p, err := c.Start(context.Background(), sh("cat "+goFifo+"; exit 9"))
	require.NoError(t, err)
	reconnect := d.drop(t)
	require.NoError(t, os.WriteFile(goFifo, []byte("bye\n"), 0o600))
	assert.Eventually(t, func() bool { _, _, done, _ := d.state(p.cl.id); return done }, 10*time.Second, 5*time.Millisecond,
		"the process ended while disconnected")
	reconnect()
	out, err := io.ReadAll(p.Stdout())
	require.NoError(t, err)
	assert.Equal(t, "bye\n", string(out))
	code, err := p.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 9, code)
}

// TestBackpressure: nobody reads a process's stdout: the agent holds one window, boxd one
// window, and the process is blocked, not dropped; once read, every byte arrives.
func TestBackpressure(t *testing.T) {
	d := startDaemon(t, time.Minute)
	c := connect(t, d)
	const total = 8_000_000
	p, err := c.Start(context.Background(), sh(fmt.Sprintf("head -c %d /dev/zero; echo end >&2", total)))
	require.NoError(t, err)
	id := p.cl.id
	assert.Eventually(t, func() bool { n, _, _, _ := d.state(id); return n >= OutputWindow }, 30*time.Second, 5*time.Millisecond,
		"the agent's window fills")
	buffered, produced, done, _ := d.state(id)
	assert.LessOrEqual(t, buffered, OutputWindow+ChunkSize)
	assert.LessOrEqual(t, produced, uint64(OutputWindow+ChunkSize), "the agent stopped reading the pipe")
	assert.False(t, done)
	select {
	case <-p.Done():
		t.Fatal("the process cannot have finished: its output is not read")
	default:
	}
	assert.LessOrEqual(t, p.cl.sinks[0].pending(), OutputWindow+ChunkSize, "boxd holds at most a window")
	n, err := io.Copy(io.Discard, p.Stdout())
	require.NoError(t, err)
	assert.Equal(t, int64(total), n, "nothing dropped")
	stderr, err := io.ReadAll(p.Stderr())
	require.NoError(t, err)
	assert.Equal(t, "end\n", string(stderr))
	code, err := p.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 0, code)
}

// TestDetachTimeoutKillsAbandonedCommands: a command nobody re-attaches within the detach
// timeout is killed with its process group and forgotten.
func TestDetachTimeoutKillsAbandonedCommands(t *testing.T) {
	d := startDaemon(t, 50*time.Millisecond)
	c := connect(t, d)
	p, err := c.Start(context.Background(), sh("sleep 1002 & echo $!; wait"))
	require.NoError(t, err)
	child := strings.TrimSpace(readLine(t, bufio.NewReader(p.Stdout())))
	require.NotEmpty(t, state(child))
	reconnect := d.drop(t)
	assert.Eventually(t, func() bool { return gone(child) }, 10*time.Second, 5*time.Millisecond, "the process group is killed")
	assert.Eventually(t, func() bool { _, _, _, known := d.state(p.cl.id); return !known }, 10*time.Second, 5*time.Millisecond, "and forgotten")
	reconnect()
	_, err = p.Wait(context.Background())
	require.ErrorIs(t, err, ErrLost)
	assert.Contains(t, err.Error(), "no command with id")
	// The client goes on with new commands.
	var out bytes.Buffer
	code, err := c.Run(context.Background(), sh("echo after"), &out, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Equal(t, "after\n", out.String())
}

// TestReattachGivesUpWhenTheSandboxIsGone: a dialer that reports ErrGone ends the wait.
func TestReattachGivesUpWhenTheSandboxIsGone(t *testing.T) {
	d := startDaemon(t, time.Minute)
	var mu sync.Mutex
	goneNow := false
	dial := d.dialer()
	c, err := Connect(context.Background(), func(ctx context.Context) (Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if goneNow {
			return Conn{}, fmt.Errorf("%w: test pod deleted", ErrGone)
		}
		return dial(ctx)
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	p, err := c.Start(context.Background(), sh("exec sleep 1003"))
	require.NoError(t, err)
	mu.Lock()
	goneNow = true
	mu.Unlock()
	d.drop(t)()
	_, err = p.Wait(context.Background())
	require.ErrorIs(t, err, ErrLost)
	assert.Contains(t, err.Error(), "test pod deleted")
	_, err = c.Run(context.Background(), sh("true"), nil, nil)
	assert.ErrorIs(t, err, ErrGone)
}

func TestAttachRefusals(t *testing.T) {
	cases := []struct {
		name  string
		frame Frame
		want  string
	}{
		{"unknown id", Frame{Type: Attach, ID: 5, Payload: u64s(0, 0, 0, 0)}, "no command with id 5"},
		{"offsets beyond the output", Frame{Type: Attach, ID: 9, Payload: u64s(0, 100, 0, 0)}, "attach of command 9 with stdout offsets 0/100 outside the buffered 0..3"},
		{"consumed beyond received", Frame{Type: Attach, ID: 9, Payload: u64s(2, 1, 0, 0)}, "attach of command 9 with stdout offsets 2/1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send, recv, _ := raw(t)
			send(startFrame(t, 9, sh("echo up; exec sleep 300")))
			require.Equal(t, Frame{Type: Stdout, ID: 9, Payload: []byte("up\n")}, recv())
			send(tc.frame)
			f := recv()
			assert.Equal(t, Error, f.Type)
			assert.Equal(t, tc.frame.ID, f.ID, "refused for that id only")
			assert.Contains(t, string(f.Payload), tc.want)
			send(Frame{Type: Kill, ID: 9, Payload: u32(9)})
			assert.Equal(t, Frame{Type: Exit, ID: 9, Payload: u32(137)}, recv(), "the connection goes on")
		})
	}
}

func TestStdinBeyondTheWindowEndsTheConnection(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		err := Serve(inR, outW, os.Environ())
		outW.CloseWithError(io.EOF)
		served <- err
	}()
	t.Cleanup(func() { inW.Close() })
	hello, err := ReadFrame(outR, MaxPayload)
	require.NoError(t, err)
	require.Equal(t, Hello, hello.Type)
	cmd := sh("exec sleep 300") // never reads its stdin
	cmd.Stdin = true
	require.NoError(t, WriteFrame(inW, startFrame(t, 3, cmd)))
	// The pipe takes some (64 KiB on Linux), the agent queues StdinWindow: a window and
	// 256 KiB more cannot fit.
	go func() {
		chunk := make([]byte, ChunkSize)
		for range (StdinWindow + 256<<10) / ChunkSize {
			if WriteFrame(inW, Frame{Type: Stdin, ID: 3, Payload: chunk}) != nil {
				return
			}
		}
	}()
	var f Frame
	for f.Type == 0 || f.Type == StdinAck {
		f, err = ReadFrame(outR, MaxPayload)
		require.NoError(t, err)
	}
	assert.Equal(t, Frame{Type: Error, Payload: []byte("stdin of command 3 exceeds the 1048576-byte window")}, f)
	go func() { _, _ = io.Copy(io.Discard, outR) }() // the killed command's Exit, and the rest
	require.Error(t, <-served)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStartIsSentAgainOnANewConnection: a Start that cannot be written is sent on a new
// connection, and the command runs once. The failing write is a fake (the first connection's
// writer refuses every write while its read side stays up): a real dead relay also ends the
// read side, and which of the two the client notices first cannot be controlled.
func TestStartIsSentAgainOnANewConnection(t *testing.T) {
	d := startDaemon(t, time.Minute)
	dial := d.dialer()
	var mu sync.Mutex
	dials := 0
	c, err := Connect(context.Background(), func(ctx context.Context) (Conn, error) {
		conn, err := dial(ctx)
		mu.Lock()
		dials++
		first := dials == 1
		mu.Unlock()
		if err == nil && first {
			conn.W = writerFunc(func([]byte) (int, error) { return 0, syscall.EPIPE })
		}
		return conn, err
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	dir := t.TempDir()
	var out bytes.Buffer
	code, err := c.Run(context.Background(), sh("echo ran >> "+filepath.Join(dir, "log")+"; echo ok"), &out, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Equal(t, "ok\n", out.String())
	log, err := os.ReadFile(filepath.Join(dir, "log"))
	require.NoError(t, err)
	assert.Equal(t, "ran\n", string(log), "it ran once")
	mu.Lock()
	assert.Equal(t, 2, dials)
	mu.Unlock()
}

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// served connects a Client to Serve over pipes, in this process (the commands are real
// processes of the test's machine).
type served struct {
	client  *Client
	toAgent *io.PipeWriter
	served  chan error
}

func serve(t *testing.T, environ []string) *served {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &served{toAgent: inW, served: make(chan error, 1)}
	go func() {
		err := Serve(inR, outW, environ)
		outW.CloseWithError(io.EOF)
		s.served <- err
	}()
	c, err := Dial(context.Background(), outR, inW)
	require.NoError(t, err)
	s.client = c
	t.Cleanup(func() {
		inW.Close()
		<-c.Done()
	})
	return s
}

type result struct {
	code           int
	stdout, stderr string
}

func (s *served) run(t *testing.T, cmd Command) result {
	t.Helper()
	var so, se bytes.Buffer
	code, err := s.client.Run(context.Background(), cmd, &so, &se)
	require.NoError(t, err)
	return result{code, so.String(), se.String()}
}

func sh(script string, env ...string) Command {
	return Command{Argv: []string{"/bin/sh", "-c", script}, Env: env}
}

func TestServeRunsCommands(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("echo no"), 0o644))
	s := serve(t, []string{"PATH=/usr/bin:/bin", "KEEP=base", EnvMark, "HOME=/runtime-home"})
	cases := []struct {
		name string
		cmd  Command
		want result
	}{
		{"stdout and stderr separate", sh("echo out; echo err >&2"), result{0, "out\n", "err\n"}},
		{"exit status", sh("exit 7"), result{7, "", ""}},
		{"killed by a signal: 128+n like a shell", sh("kill -TERM $$"), result{143, "", ""}},
		{"program found on the command's PATH", Command{Argv: []string{"sh", "-c", "echo found"}}, result{0, "found\n", ""}},
		{"program not found", Command{Argv: []string{"no-such-program-boxd"}}, result{127, "", "exec: \"no-such-program-boxd\": executable file not found in $PATH: file does not exist\n"}},
		{"program not executable", Command{Argv: []string{plain}}, result{126, "", plain + ": permission denied\n"}},
		{"working directory", Command{Argv: []string{"/bin/sh", "-c", "pwd"}, Dir: dir}, result{0, dir + "\n", ""}},
		{"stdin is /dev/null", sh("cat; echo eof"), result{0, "eof\n", ""}},
		{"environment: engine merge, runtime HOME appended last", Command{Argv: []string{"cat", "/proc/self/environ"}, Env: []string{"ZZ=1", "KEEP=over", "AA=two words"}},
			result{0, "PATH=/usr/bin:/bin\x00KEEP=over\x00ZZ=1\x00AA=two words\x00HOME=/runtime-home\x00", ""}},
		{"environment: HOME of the command wins", Command{Argv: []string{"cat", "/proc/self/environ"}, Env: []string{"HOME=/h"}},
			result{0, "PATH=/usr/bin:/bin\x00KEEP=base\x00HOME=/h\x00", ""}},
		{"large output in order", sh("seq 1 200000"), result{0, seq(200000), ""}},
		{"own session and process group", sh(`set -- $(cut -d' ' -f5,6 /proc/$$/stat); [ "$1" = $$ ] && [ "$2" = $$ ] && echo leader`), result{0, "leader\n", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, s.run(t, tc.cmd))
		})
	}
}

func seq(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.String()
}

func TestServeRunsCommandsConcurrently(t *testing.T) {
	s := serve(t, os.Environ())
	// Pairs of commands meet on a FIFO: the reader blocks until its writer runs, so every
	// command can only finish when the agent runs them at the same time.
	const pairs = 4
	dir := t.TempDir()
	var wg sync.WaitGroup
	results := make([]result, 2*pairs)
	errs := make([]error, 2*pairs)
	runAt := func(i int, script string) {
		defer wg.Done()
		var so, se bytes.Buffer
		code, err := s.client.Run(context.Background(), sh(script), &so, &se)
		results[i], errs[i] = result{code, so.String(), se.String()}, err
	}
	for i := range pairs {
		fifo := filepath.Join(dir, strconv.Itoa(i))
		require.NoError(t, syscall.Mkfifo(fifo, 0o600))
		wg.Add(2)
		go runAt(2*i, "cat "+fifo)
		go runAt(2*i+1, fmt.Sprintf("echo pair %d > %s; echo wrote", i, fifo))
	}
	wg.Wait()
	for i := range pairs {
		require.NoError(t, errs[2*i])
		require.NoError(t, errs[2*i+1])
		assert.Equal(t, result{0, fmt.Sprintf("pair %d\n", i), ""}, results[2*i])
		assert.Equal(t, result{0, "wrote\n", ""}, results[2*i+1])
	}
}

// state is a process's state letter, "" when it no longer exists.
func state(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// gone: the process no longer runs (exited, possibly a zombie not yet reaped by its new parent).
func gone(pid string) bool {
	st := state(pid)
	return st == "" || st == "Z" || st == "X"
}

func TestCancelKillsTheWholeProcessGroup(t *testing.T) {
	s := serve(t, os.Environ())
	ctx, cancel := context.WithCancel(context.Background())
	started := &signalWriter{line: make(chan string, 1)}
	done := make(chan error, 1)
	go func() {
		_, err := s.client.Run(ctx, sh("sleep 300 & echo $!; wait"), started, io.Discard)
		done <- err
	}()
	child := strings.TrimSpace(<-started.line)
	require.NotEmpty(t, state(child), "the background child runs")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Eventually(t, func() bool { return gone(child) }, 10*time.Second, 5*time.Millisecond, "the background child is killed with its group")
	assert.Equal(t, result{0, "still serving\n", ""}, s.run(t, sh("echo still serving")))
}

// signalWriter reports its first write.
type signalWriter struct {
	once sync.Once
	line chan string
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { w.line <- string(p) })
	return len(p), nil
}

func TestEndOfInputKillsRunningCommands(t *testing.T) {
	s := serve(t, os.Environ())
	started := &signalWriter{line: make(chan string, 1)}
	type ran struct {
		code int
		err  error
	}
	done := make(chan ran, 1)
	go func() {
		code, err := s.client.Run(context.Background(), sh("sleep 301 & echo $!; wait"), started, io.Discard)
		done <- ran{code, err}
	}()
	child := strings.TrimSpace(<-started.line)
	s.toAgent.Close()
	require.NoError(t, <-s.served, "end of input is a clean end")
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, 128+9, r.code, "the agent killed the command and reported it before it ended")
	assert.Eventually(t, func() bool { return gone(child) }, 10*time.Second, 5*time.Millisecond, "nothing outlives the connection")
}

// raw speaks to Serve frame by frame.
func raw(t *testing.T) (send func(Frame), recv func() Frame, served chan error) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served = make(chan error, 1)
	go func() {
		err := Serve(inR, outW, os.Environ())
		outW.CloseWithError(io.EOF)
		served <- err
	}()
	t.Cleanup(func() { inW.Close(); _, _ = io.Copy(io.Discard, outR) })
	send = func(f Frame) { require.NoError(t, WriteFrame(inW, f)) }
	recv = func() Frame {
		f, err := ReadFrame(outR, MaxPayload)
		require.NoError(t, err)
		return f
	}
	require.Equal(t, Frame{Type: Hello, Payload: []byte(Version)}, recv())
	return send, recv, served
}

func startFrame(t *testing.T, id uint32, cmd Command) Frame {
	p, err := EncodeCommand(cmd)
	require.NoError(t, err)
	return Frame{Type: Start, ID: id, Payload: p}
}

func TestServeRefusesWhatItDoesNotUnderstand(t *testing.T) {
	cases := []struct {
		name  string
		frame Frame
		want  string
	}{
		{"unknown type", Frame{Type: 99, ID: 1}, "unexpected type(99) frame"},
		{"agent-to-boxd type", Frame{Type: Stdout, ID: 1, Payload: []byte("x")}, "unexpected stdout frame"},
		{"hello", Frame{Type: Hello, Payload: []byte(Version)}, "unexpected hello frame"},
		{"kill without a signal", Frame{Type: Kill, ID: 1}, "kill frame with a 0-byte payload"},
		{"kill with signal 0", Frame{Type: Kill, ID: 1, Payload: u32(0)}, "kill frame with signal 0"},
		{"kill with signal 65", Frame{Type: Kill, ID: 1, Payload: u32(65)}, "kill frame with signal 65"},
		{"agent-to-boxd attached", Frame{Type: Attached, ID: 1, Payload: make([]byte, 17)}, "unexpected attached frame"},
		{"agent-to-boxd stdin-ack", Frame{Type: StdinAck, ID: 1, Payload: make([]byte, 8)}, "unexpected stdin-ack frame"},
		{"attach with a short payload", Frame{Type: Attach, ID: 1, Payload: u32(1)}, "attach frame with a 4-byte payload (want 32)"},
		{"ack with a short payload", Frame{Type: Ack, ID: 1}, "ack frame with a 0-byte payload (want 16)"},
		{"stdin-close with a payload", Frame{Type: StdinClose, ID: 1, Payload: []byte("x")}, "stdin-close frame with a 1-byte payload"},
		{"release with a payload", Frame{Type: Release, ID: 1, Payload: []byte("x")}, "release frame with a 1-byte payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send, recv, served := raw(t)
			send(tc.frame)
			assert.Equal(t, Frame{Type: Error, Payload: []byte(tc.want)}, recv())
			require.Error(t, <-served, "the connection ends")
		})
	}
}

func TestServeRefusesOversizedFrame(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		err := Serve(inR, outW, nil)
		outW.CloseWithError(io.EOF)
		served <- err
	}()
	_, err := ReadFrame(outR, MaxPayload)
	require.NoError(t, err)
	go func() { _, _ = inW.Write(header(Start, 1, MaxPayload+1)) }()
	f, err := ReadFrame(outR, MaxPayload)
	require.NoError(t, err)
	assert.Equal(t, Error, f.Type)
	assert.Contains(t, string(f.Payload), "limit 1048576")
	assert.ErrorIs(t, <-served, ErrFrameTooLarge)
	inW.Close()
}

func TestServeRefusesBadStartForThatIDOnly(t *testing.T) {
	cases := []struct {
		name  string
		frame func(t *testing.T) Frame
		want  string
	}{
		{"garbage payload", func(*testing.T) Frame { return Frame{Type: Start, ID: 3, Payload: []byte{1, 2}} }, "decode command: truncated argv count"},
		{"reserved id 0", func(t *testing.T) Frame { return startFrame(t, 0, sh("true")) }, "request id 0 is reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send, recv, _ := raw(t)
			f := tc.frame(t)
			send(f)
			assert.Equal(t, Frame{Type: Error, ID: f.ID, Payload: []byte(tc.want)}, recv())
			send(startFrame(t, 4, sh("exit 5")))
			assert.Equal(t, Frame{Type: Exit, ID: 4, Payload: u32(5)}, recv(), "the connection goes on")
		})
	}
}

func TestServeRefusesAnIDInUse(t *testing.T) {
	send, recv, _ := raw(t)
	send(startFrame(t, 9, sh("echo up; exec sleep 300")))
	assert.Equal(t, Frame{Type: Stdout, ID: 9, Payload: []byte("up\n")}, recv())
	send(startFrame(t, 9, sh("true")))
	assert.Equal(t, Frame{Type: Error, ID: 9, Payload: []byte("request id 9 is already in use")}, recv())
	send(Frame{Type: Kill, ID: 9, Payload: u32(9)})
	assert.Equal(t, Frame{Type: Exit, ID: 9, Payload: u32(128 + 9)}, recv())
}

// fakeAgent plays the agent's side with canned frames.
func fakeAgent(t *testing.T, frames ...Frame) *Client {
	t.Helper()
	outR, outW := io.Pipe()
	go func() {
		for _, f := range frames {
			if WriteFrame(outW, f) != nil {
				return
			}
		}
		_ = outW.Close()
	}()
	c, err := Dial(context.Background(), outR, io.Discard)
	require.NoError(t, err)
	return c
}

func TestClientRefusesWhatItDoesNotUnderstand(t *testing.T) {
	hello := Frame{Type: Hello, Payload: []byte(Version)}
	cases := []struct {
		name   string
		frames []Frame
		want   string
	}{
		{"unknown type", []Frame{hello, {Type: 42, ID: 1}}, "unexpected type(42) frame from the agent"},
		{"boxd-to-agent type", []Frame{hello, {Type: Kill, ID: 1, Payload: u32(9)}}, "unexpected kill frame from the agent"},
		{"second hello", []Frame{hello, hello}, "unexpected hello frame from the agent"},
		{"short exit", []Frame{hello, {Type: Exit, ID: 1, Payload: []byte{1}}}, "exit frame with a 1-byte payload"},
		{"boxd-to-agent stdin", []Frame{hello, {Type: Stdin, ID: 1, Payload: []byte("x")}}, "unexpected stdin frame from the agent"},
		{"short attached", []Frame{hello, {Type: Attached, ID: 1, Payload: make([]byte, 16)}}, "attached frame with a 16-byte payload"},
		{"attached with unknown flags", []Frame{hello, {Type: Attached, ID: 1, Payload: append(make([]byte, 16), 2)}}, "attached frame with unknown flags 0x2"},
		{"short stdin-ack", []Frame{hello, {Type: StdinAck, ID: 1, Payload: u32(1)}}, "stdin-ack frame with a 4-byte payload"},
		{"connection refused", []Frame{hello, {Type: Error, Payload: []byte("nope")}}, "agent refused the connection: nope"},
		{"end of stream", []Frame{hello}, "EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeAgent(t, tc.frames...)
			<-c.Done()
			require.ErrorIs(t, c.Err(), ErrClosed)
			assert.Contains(t, c.Err().Error(), tc.want)
			_, err := c.Run(context.Background(), sh("true"), nil, nil)
			assert.ErrorIs(t, err, ErrClosed, "no command runs on a closed connection")
		})
	}
}

func TestDialRefusesABadHello(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"other version", Frame{Type: Hello, Payload: []byte("boxagent/1")}.Append(nil), `expected hello "boxagent/2", got hello frame "boxagent/1"`},
		{"not a hello", Frame{Type: Stdout, Payload: []byte("hi")}.Append(nil), "expected hello"},
		{"oversized hello", header(Hello, 0, 1<<20), "frame too large"},
		{"shell error instead of an agent", []byte("exec: /.boxd-agent: not found\n"), "frame too large"},
		{"nothing", nil, "EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(context.Background(), bytes.NewReader(tc.input), io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestDialGivesUpWithItsContext(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, r, io.Discard)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestRunRefusesACommandTooLargeBeforeSending(t *testing.T) {
	s := serve(t, os.Environ())
	_, err := s.client.Run(context.Background(), sh(strings.Repeat("x", MaxPayload)), nil, nil)
	assert.ErrorIs(t, err, ErrFrameTooLarge)
	assert.Equal(t, result{0, "ok\n", ""}, s.run(t, sh("echo ok")))
}

func TestNoOutputAfterRunReturns(t *testing.T) {
	// The agent keeps sending output for a call boxd gave up on: none of it reaches the
	// caller's writer after Run returned.
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	go func() { _ = WriteFrame(outW, Frame{Type: Hello, Payload: []byte(Version)}) }()
	c, err := Dial(context.Background(), outR, inW)
	require.NoError(t, err)
	var mu sync.Mutex
	var got bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return got.Write(p) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.Run(ctx, sh("true"), w, nil); done <- err }()
	start, err := ReadFrame(inR, MaxPayload)
	require.NoError(t, err)
	require.NoError(t, WriteFrame(outW, Frame{Type: Stdout, ID: start.ID, Payload: []byte("before")}))
	cancel()
	kill, err := ReadFrame(inR, MaxPayload)
	require.NoError(t, err)
	assert.Equal(t, Frame{Type: Kill, ID: start.ID, Payload: u32(9)}, kill)
	require.NoError(t, WriteFrame(outW, Frame{Type: Exit, ID: start.ID, Payload: u32(137)}))
	assert.ErrorIs(t, <-done, context.Canceled)
	require.NoError(t, WriteFrame(outW, Frame{Type: Stdout, ID: start.ID, Payload: []byte("after")}))
	// A frame of another id after the late one proves the late one was processed.
	require.NoError(t, WriteFrame(outW, Frame{Type: 42}))
	<-c.Done()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "before", got.String())
	assert.True(t, errors.Is(c.Err(), ErrClosed))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestClientRefusesAHostileProcessStream: an agent (or a sandbox process impersonating it)
// that breaks a process's windows ends the connection; the process is then lost, never fed
// more than the windows allow.
func TestClientRefusesAHostileProcessStream(t *testing.T) {
	big := make([]byte, ChunkSize)
	cases := []struct {
		name   string
		frames func(id uint32) []Frame
		want   string
	}{
		{"stdin-ack beyond what was sent", func(id uint32) []Frame {
			return []Frame{{Type: StdinAck, ID: id, Payload: u64s(100)}}
		}, "beyond the 0 bytes sent to it"},
		{"output beyond the window", func(id uint32) []Frame {
			var fs []Frame
			for range 2*OutputWindow/ChunkSize + 1 {
				fs = append(fs, Frame{Type: Stdout, ID: id, Payload: big})
			}
			return fs
		}, "the agent sent command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outR, outW := io.Pipe()
			inR, inW := io.Pipe()
			go func() { _ = WriteFrame(outW, Frame{Type: Hello, Payload: []byte(Version)}) }()
			c, err := Dial(context.Background(), outR, inW)
			require.NoError(t, err)
			started := make(chan *Process, 1)
			go func() {
				p, err := c.Start(context.Background(), sh("cat"))
				assert.NoError(t, err)
				started <- p
			}()
			start, err := ReadFrame(inR, MaxPayload)
			require.NoError(t, err)
			require.Equal(t, Start, start.Type)
			go func() { _, _ = io.Copy(io.Discard, inR) }()
			p := <-started
			go func() {
				for _, f := range tc.frames(start.ID) {
					if WriteFrame(outW, f) != nil {
						return
					}
				}
			}()
			<-c.Done()
			assert.Contains(t, c.Err().Error(), tc.want)
			_, err = p.Wait(context.Background())
			assert.ErrorIs(t, err, ErrClosed)
			n, _ := io.Copy(io.Discard, p.Stdout())
			assert.LessOrEqual(t, n, int64(2*OutputWindow))
			outW.Close()
		})
	}
}

package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeCommand: any Start payload is refused or decodes to a command that is valid and
// whose encoding is exactly the payload (one encoding per command, nothing ignored).
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		{Argv: []string{"sh", "-lc", "true"}},
		{Argv: []string{"env"}, Env: []string{"A=1", "B=x=y"}, Dir: "/workspace"},
	} {
		p, err := EncodeCommand(c)
		require.NoError(f, err)
		f.Add(p)
	}
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := DecodeCommand(payload)
		if err != nil {
			return
		}
		require.NotEmpty(t, c.Argv)
		require.NotEmpty(t, c.Argv[0])
		for _, s := range append(append([]string{c.Dir}, c.Argv...), c.Env...) {
			require.NotContains(t, s, "\x00")
		}
		again, err := EncodeCommand(c)
		require.NoError(t, err)
		require.Equal(t, payload, again)
	})
}

// signalOnWrite closes started at its first write (the Start frame reaching the agent).
type signalOnWrite struct {
	started chan struct{}
	done    bool
}

func (w *signalOnWrite) Write(p []byte) (int, error) {
	if !w.done {
		w.done = true
		close(w.started)
	}
	return len(p), nil
}

// FuzzClientStream: whatever an agent (or a process in the sandbox impersonating it) sends
// after its hello, the client neither panics nor hangs: the running command ends with an
// exit code, a refusal or ErrClosed once the stream ends, and what reaches the caller's
// writers is bounded by what was sent.
func FuzzClientStream(f *testing.F) {
	f.Add(cat(Frame{Type: Stdout, ID: 1, Payload: []byte("out")}.Append(nil), Frame{Type: Exit, ID: 1, Payload: u32(0)}.Append(nil)))
	f.Add(Frame{Type: Error, ID: 1, Payload: []byte("no")}.Append(nil))
	f.Add(Frame{Type: Error, Payload: []byte("bye")}.Append(nil))
	f.Add(header(Stdout, 1, MaxPayload+1))
	f.Add(header(Exit, 1, 4))
	f.Add([]byte("OCI runtime exec failed"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		outR, outW := io.Pipe()
		go func() { _ = WriteFrame(outW, Frame{Type: Hello, Payload: []byte(Version)}) }()
		starter := &signalOnWrite{started: make(chan struct{})}
		c, err := Dial(context.Background(), outR, starter)
		require.NoError(t, err)
		var so, se bytes.Buffer
		type ran struct {
			code int
			err  error
		}
		done := make(chan ran, 1)
		go func() {
			code, err := c.Run(context.Background(), Command{Argv: []string{"true"}}, &so, &se)
			done <- ran{code, err}
		}()
		<-starter.started
		go func() {
			_, _ = outW.Write(stream)
			_ = outW.Close()
		}()
		r := <-done
		<-c.Done()
		if r.err != nil {
			assert.True(t, errors.Is(r.err, ErrClosed) || bytes.Contains([]byte(r.err.Error()), []byte("refused the command")), r.err.Error())
		}
		assert.LessOrEqual(t, so.Len()+se.Len(), len(stream))
	})
}

package wsync

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// env is one session's two sides on real file systems: the host trees under host/, the
// sandbox's file system under sandbox/ (Serve's Base), connected through io.Pipe exactly as
// the integration connects them through an exec's stdin and stdout.
type env struct {
	t       testing.TB
	host    string
	sandbox string
	sess    *Session
	trees   []Tree
	now     time.Time

	mu       sync.Mutex
	dials    int
	reqBytes int64 // bytes of requests (push: the tar of what is sent)
	rspBytes int64 // bytes of responses (pull: the tar of what comes back)
}

type mountSpec struct {
	host  string // directory under env.host
	mount string
	mode  backend.MountMode
}

// the usual layout: the tenant workspace rw at /workspace, a rw skill and a ro skill nested in it.
var stdMounts = []mountSpec{
	{"ws", "/workspace", backend.MountRW},
	{"skill", "/workspace/.skills/demo", backend.MountRW},
	{"roskill", "/workspace/.skills/ro", backend.MountRO},
}

func newEnv(t testing.TB, mounts []mountSpec, opts Options) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, host: filepath.Join(base, "host"), sandbox: filepath.Join(base, "sandbox"), now: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)}
	require.NoError(t, os.MkdirAll(e.sandbox, 0o755))
	for _, m := range mounts {
		dir := filepath.Join(e.host, m.host)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		d, err := os.Open(dir)
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		e.trees = append(e.trees, Tree{HostPath: dir, MountPath: m.mount, Mode: m.mode, Dir: d})
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return e.now }
	}
	opts.NoFsync = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := NewSession(e.trees, opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	e.sess = s
	return e
}

type countingWriter struct {
	w io.WriteCloser
	n *int64
	e *env
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.e.mu.Lock()
	*c.n += int64(n)
	c.e.mu.Unlock()
	return n, err
}
func (c countingWriter) Close() error { return c.w.Close() }

var errExited = errors.New("the sandbox end exited")

// dial runs Serve as the sandbox end would run as a process: when it returns, its stdin
// and stdout close.
func (e *env) dial(ctx context.Context) (*Conn, error) {
	return e.dialWith(ctx, func(ctx context.Context, in io.Reader, out io.Writer) error {
		return Serve(ctx, in, out, ServeOptions{Base: e.sandbox})
	})
}

func (e *env) dialWith(ctx context.Context, end func(context.Context, io.Reader, io.Writer) error) (*Conn, error) {
	e.mu.Lock()
	e.dials++
	e.mu.Unlock()
	reqR, reqW := io.Pipe()
	rspR, rspW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := end(ctx, reqR, countingWriter{rspW, &e.rspBytes, e})
		reqR.CloseWithError(errExited)
		rspW.Close()
		done <- err
	}()
	return &Conn{Stdin: countingWriter{reqW, &e.reqBytes, e}, Stdout: rspR, Done: func(failed bool) error {
		if failed {
			rspR.CloseWithError(errExited) // what killing the command does to its stdout
		}
		return <-done
	}}, nil
}

func (e *env) counters() (dials int, req, rsp int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dials, e.reqBytes, e.rspBytes
}

func (e *env) resetCounters() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dials, e.reqBytes, e.rspBytes = 0, 0, 0
}

func (e *env) push() *Report {
	e.t.Helper()
	rep, err := e.sess.Push(context.Background(), e.dial)
	require.NoError(e.t, err)
	return rep
}

func (e *env) pull() *Report {
	e.t.Helper()
	rep, err := e.sess.Pull(context.Background(), e.dial)
	require.NoError(e.t, err)
	return rep
}

// h and s name a path on the host side (under the tree directory) and in the sandbox.
func (e *env) h(tree, rel string) string { return filepath.Join(e.host, tree, rel) }
func (e *env) s(abs string) string       { return filepath.Join(e.sandbox, abs) }

func write(t testing.TB, p, content string, mode os.FileMode) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	require.NoError(t, os.Chmod(p, mode))
}

func read(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// snapshot describes every entry under dir (symlinks not followed): kind, mode, content hash
// or target. wsync's own marker is left out unless withMarker.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return out
	}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || d.Name() == markerName {
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "l " + target
		case st.IsDir():
			out[rel] = fmt.Sprintf("d %o", st.Mode().Perm())
		case st.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("f %o %s", st.Mode().Perm(), hex.EncodeToString(sum[:8]))
		default:
			out[rel] = "special " + st.Mode().Type().String()
		}
		return nil
	}))
	return out
}

// without removes the entries at or beneath the given prefixes (nested trees, skipped dirs).
func without(m map[string]string, prefixes ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !underAny(k, prefixes) {
			out[k] = v
		}
	}
	return out
}

// stagingLeft lists wsync temporary files left anywhere under dir.
func stagingLeft(t testing.TB, dir string) []string {
	t.Helper()
	var left []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), stagingPrefix) && d.Name() != markerName {
			left = append(left, p)
		}
		return nil
	})
	return left
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

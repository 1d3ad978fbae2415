// Package standins_test runs the stand-in binaries on this machine's loopback, each on its own
// 127.x.y.z address as a pod has its own IP, and checks that they answer what the real programs
// answer (standins_test.go) and that everything the chart renders works against them
// (chart_test.go).
package standins_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type standinPaths struct{ langbot, runtime string }

// buildStandins builds both stand-ins once per test binary (memoised, never changed after).
var buildStandins = sync.OnceValues(func() (standinPaths, error) {
	dir, err := os.MkdirTemp("", "standins-")
	if err != nil {
		return standinPaths{}, err
	}
	p := standinPaths{langbot: filepath.Join(dir, "langbot"), runtime: filepath.Join(dir, "pluginruntime")}
	for pkg, dst := range map[string]string{"./langbot": p.langbot, "./pluginruntime": p.runtime} {
		cmd := exec.Command("go", "build", "-o", dst, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return standinPaths{}, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return p, nil
})

func standinBinaries(t *testing.T) (langbot, runtime string) {
	t.Helper()
	p, err := buildStandins()
	require.NoError(t, err)
	return p.langbot, p.runtime
}

// podIP returns a loopback address of its own for one stand-in (127.0.0.0/8 is all loopback on
// Linux), so fixed upstream ports never collide with anything else on the machine.
func podIP() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(250))
}

// proc is one running stand-in.
type proc struct {
	cmd  *exec.Cmd
	ip   string
	logs *bytes.Buffer
	done chan error
	mu   *sync.Mutex
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// start runs bin with args and env (plus STANDIN_BIND_HOST=ip) and stops it at the end.
func start(t *testing.T, bin, ip string, args []string, env []string) *proc {
	t.Helper()
	p := &proc{ip: ip, logs: &bytes.Buffer{}, done: make(chan error, 1), mu: &sync.Mutex{}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, env...), "STANDIN_BIND_HOST="+ip)
	w := lockedBuffer{mu: p.mu, buf: p.logs}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s %v logs:\n%s", filepath.Base(bin), args, p.log())
		}
	})
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *proc) addr(port int) string { return net.JoinHostPort(p.ip, fmt.Sprint(port)) }

// waitListening waits (bounded) until port accepts connections, failing early if the process exits.
func (p *proc) waitListening(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr(port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case err := <-p.done:
			p.done <- err
			require.FailNowf(t, "stand-in exited", "before listening on %d: %v\n%s", port, err, p.log())
		case <-time.After(50 * time.Millisecond):
		}
		require.Truef(t, time.Now().Before(deadline), "nothing listens on %s: %v\n%s", p.addr(port), err, p.log())
	}
}

// exited waits (bounded) for the process to end by itself and returns its error.
func (p *proc) exited(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(20 * time.Second):
		require.FailNow(t, "the stand-in is still running", p.log())
		return nil
	}
}

// raw sends one raw HTTP request and returns the response, or nil when the server closed the
// connection without answering.
func raw(t *testing.T, addr, request string) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, request)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	require.NoError(t, err)
	return resp
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	_ = r.Body.Close()
	return string(b)
}

// probeGet does what the kubelet's HTTP probe does (a fresh connection, Connection: close,
// User-Agent kube-probe) and returns the status code.
func probeGet(ctx context.Context, addr, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	req.Header.Set("Accept", "*/*")
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

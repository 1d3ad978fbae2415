package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/atomicfile"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
)

// The exec agent on this backend: the Pod's init container (the boxd image, running
// `/boxd install-agent`) copies boxagent into an emptyDir that the sandbox container mounts
// read-only at AgentDir, and boxd holds ONE Kubernetes exec stream per sandbox (WebSocket,
// v5.channel.k8s.io, SPDY when the upgrade is refused) in which boxagent runs and speaks the
// internal/agent protocol on stdin/stdout. Every box_exec is then one frame on that stream
// instead of one exec through API server, kubelet and runtime. A stream that ends (API
// server restart, idle timeout, Pod gone) is opened again on the next exec; a Pod that is gone
// makes that exec fail with backend.ErrNotStarted so that the session layer recreates it.

// InstallAgentCommand is boxd's subcommand run by the init container.
const InstallAgentCommand = "install-agent"

// InstallAgent copies the boxagent binary src to dst (mode 0555, atomically).
func InstallAgent(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read boxagent binary %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create agent directory for %s: %w", dst, err)
	}
	if err := atomicfile.Write(dst, data, 0o555); err != nil {
		return fmt.Errorf("install agent %s: %w", dst, err)
	}
	return nil
}

// agentConn is one exec stream running boxagent.
type agentConn struct {
	client *agent.Client
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	stderr *agent.HeadBuffer
	done   chan struct{} // the stream ended; streamErr is set
	err    error
}

func (c *agentConn) close() {
	c.cancel()
	_ = c.stdin.Close()
}

// describe says how the stream ended, for errors and logs.
func (c *agentConn) describe() string {
	msg := fmt.Sprint(c.client.Err())
	select {
	case <-c.done:
		if c.err != nil {
			msg += " (exec stream: " + c.err.Error() + ")"
		}
	default:
	}
	if s := c.stderr.String(); s != "" {
		msg += " (agent stderr: " + docker.Collapse(s) + ")"
	}
	return msg
}

// executor opens a Kubernetes exec of argv in the Pod's sandbox container: WebSocket first,
// SPDY when the server refuses the WebSocket upgrade.
func (b *Backend) executor(pod string, argv []string) (remotecommand.Executor, error) {
	req := b.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(b.set.Namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: SandboxContainer, Command: argv, Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(b.rest, http.MethodGet, req.URL().String())
	if err != nil {
		return nil, fmt.Errorf("websocket executor: %w", err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(b.rest, http.MethodPost, req.URL())
	if err != nil {
		return nil, fmt.Errorf("spdy executor: %w", err)
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// dialAgent starts boxagent in the Pod over one exec stream and waits for its hello.
func (b *Backend) dialAgent(ctx context.Context, pod string) (*agentConn, error) {
	ex, err := b.executor(pod, []string{AgentPath})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &agentConn{cancel: cancel, stdin: inW, stderr: &agent.HeadBuffer{}, done: make(chan struct{})}
	go func() {
		err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: c.stderr})
		if err == nil {
			err = io.EOF
		}
		c.err = err
		close(c.done)
		outW.CloseWithError(err)
		inR.CloseWithError(err)
	}()
	hctx, hcancel := context.WithTimeout(ctx, probeTimeout)
	defer hcancel()
	client, err := agent.Dial(hctx, outR, inW)
	if err != nil {
		c.close()
		<-c.done
		if c.err != nil && !errors.Is(c.err, io.EOF) && !errors.Is(c.err, context.Canceled) {
			err = fmt.Errorf("%w (exec stream: %v)", err, c.err)
		}
		if s := c.stderr.String(); s != "" {
			err = fmt.Errorf("%w (agent stderr: %s)", err, docker.Collapse(s))
		}
		return nil, fmt.Errorf("start the exec agent in pod %s: %w", pod, err)
	}
	c.client = client
	return c, nil
}

// sandbox is the agent state of one Pod; mu is held while connecting.
type sandbox struct {
	mu   sync.Mutex
	conn *agentConn
}

func (b *Backend) sandbox(name string) *sandbox {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sandboxes[name]
	if s == nil {
		s = &sandbox{}
		b.sandboxes[name] = s
	}
	return s
}

// agentFor returns the Pod's connected agent, opening the stream when there is none or the
// previous one ended.
func (b *Backend) agentFor(ctx context.Context, pod string) (*agentConn, error) {
	s := b.sandbox(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		select {
		case <-s.conn.client.Done():
			b.log.Warn(fmt.Sprintf("LangBot Box exec agent stream lost, reconnecting: backend=kubernetes pod=%s: %s", pod, s.conn.describe()))
			s.conn.close()
			s.conn = nil
		default:
			return s.conn, nil
		}
	}
	c, err := b.dialAgent(ctx, pod)
	if err != nil {
		return nil, err
	}
	s.conn = c
	return c, nil
}

// connected reports whether the Pod's agent stream is up (without waiting for a connect).
func (b *Backend) connected(pod string) bool {
	b.mu.Lock()
	s := b.sandboxes[pod]
	b.mu.Unlock()
	if s == nil || !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	return s.conn != nil && s.conn.client.Err() == nil
}

// forget closes the Pod's agent stream.
func (b *Backend) forget(pod string) {
	b.mu.Lock()
	s := b.sandboxes[pod]
	delete(b.sandboxes, pod)
	b.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		if s.conn != nil {
			s.conn.close()
			s.conn = nil
		}
		s.mu.Unlock()
	}
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
// read-only at AgentDir, and the sandbox container's main process is `boxagent daemon`
// (DaemonCommand): the agent as the container's init, serving the internal/agent protocol on
// an abstract unix socket. boxd holds ONE Kubernetes exec stream per sandbox (WebSocket,
// v5.channel.k8s.io, SPDY when the upgrade is refused) running `boxagent connect`, a relay
// from the stream's stdin/stdout to that socket. Every box_exec is one frame on that stream
// instead of one exec through API server, kubelet and runtime, and managed processes (stdin,
// stdout, stderr, signals, exit codes) go the same way. A stream that ends (API server
// restart, idle timeout) leaves the commands running in the daemon: agent.Client opens a new
// stream and re-attaches them without losing or repeating output. A Pod that is gone makes
// the dial report agent.ErrGone, and an exec then fails with backend.ErrNotStarted so that the
// session layer recreates the sandbox.

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

// stream is one exec stream running `boxagent connect`.
type stream struct {
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	stderr *agent.HeadBuffer
	done   chan struct{} // the stream ended; err is set
	err    error
}

func (c *stream) close() {
	c.cancel()
	_ = c.stdin.Close()
}

// describe says how the stream ended, for errors and logs.
func (c *stream) describe() string {
	var parts []string
	select {
	case <-c.done:
		if c.err != nil && !errors.Is(c.err, io.EOF) && !errors.Is(c.err, context.Canceled) {
			parts = append(parts, "exec stream: "+c.err.Error())
		}
	default:
	}
	if s := c.stderr.String(); s != "" {
		parts = append(parts, "agent stderr: "+docker.Collapse(s))
	}
	return strings.Join(parts, "; ")
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

// openStream runs `boxagent connect` in the Pod over one exec stream. The agent's hello is
// awaited by agent.Connect.
func (b *Backend) openStream(ctx context.Context, pod string) (*stream, agent.Conn, error) {
	ex, err := b.executor(pod, ConnectCommand())
	if err != nil {
		return nil, agent.Conn{}, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &stream{cancel: cancel, stdin: inW, stderr: &agent.HeadBuffer{}, done: make(chan struct{})}
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
	return c, agent.Conn{R: outR, W: inW, Close: c.close, Describe: c.describe, Check: func(err error) error {
		if !b.podRunning(context.WithoutCancel(ctx), pod) {
			return fmt.Errorf("%w: pod %s does not run: %v", agent.ErrGone, pod, err)
		}
		return err
	}}, nil
}

// dialer opens the Pod's exec streams (the newest is kept in s). A stream that cannot be
// opened while the Pod does not run is agent.ErrGone.
func (b *Backend) dialer(pod string, s *sandbox) agent.Dialer {
	return func(ctx context.Context) (agent.Conn, error) {
		s.smu.Lock()
		prev := s.stream
		s.smu.Unlock()
		if prev != nil {
			why := prev.describe()
			if why == "" {
				why = "closed"
			}
			b.log.Warn(fmt.Sprintf("LangBot Box exec agent stream lost (%s), reconnecting; running commands and managed processes are re-attached: backend=kubernetes pod=%s", why, pod))
		}
		dctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		st, conn, err := b.openStream(dctx, pod)
		if err == nil {
			s.smu.Lock()
			s.stream = st
			s.smu.Unlock()
		}
		if err != nil {
			if ctx.Err() == nil && !b.podRunning(context.WithoutCancel(ctx), pod) {
				return agent.Conn{}, fmt.Errorf("%w: pod %s does not run: %v", agent.ErrGone, pod, err)
			}
			return agent.Conn{}, fmt.Errorf("start the exec agent relay in pod %s: %w", pod, err)
		}
		return conn, nil
	}
}

// connectAgent opens the first stream of a Pod and waits for the agent's hello.
func (b *Backend) connectAgent(ctx context.Context, pod string, s *sandbox) (*agent.Client, error) {
	hctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := agent.Connect(hctx, b.dialer(pod, s))
	if err != nil {
		return nil, fmt.Errorf("start the exec agent in pod %s: %w", pod, err)
	}
	return c, nil
}

// sandbox is the agent state of one Pod; mu is held while connecting.
type sandbox struct {
	mu     sync.Mutex
	client *agent.Client

	smu    sync.Mutex
	stream *stream // the newest exec stream
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

// agentFor returns the Pod's agent client, connecting it first when there is none. A client
// re-opens its stream by itself when it drops.
func (b *Backend) agentFor(ctx context.Context, pod string) (*agent.Client, error) {
	s := b.sandbox(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil && s.client.Err() == nil {
		return s.client, nil
	}
	c, err := b.connectAgent(ctx, pod, s)
	if err != nil {
		return nil, err
	}
	s.client = c
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
	return s.client != nil && s.client.Connected()
}

// forget closes the Pod's agent client (its managed processes end with -9, as on Docker when
// the container goes).
func (b *Backend) forget(pod string) {
	b.mu.Lock()
	s := b.sandboxes[pod]
	delete(b.sandboxes, pod)
	b.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		if s.client != nil {
			s.client.Close()
			s.client = nil
		}
		s.mu.Unlock()
	}
}

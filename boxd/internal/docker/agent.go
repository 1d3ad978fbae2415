package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/atomicfile"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// The exec agent (box.docker.exec_agent, off by default) replaces the Engine API exec of every
// command (exec create, attach, inspect: a runc exec and a shim round trip each) by a frame on
// ONE long-lived exec per sandbox, in which boxagent (cmd/boxagent, internal/agent) runs as the
// container's own user and starts the commands itself.
//
// How the binary gets into the sandbox: boxd copies its boxagent binary, once per process and
// host root, to a content-addressed file <host_root>/.boxd/agent-<sha256 prefix> (mode 0555,
// written to a temporary name and renamed) and bind-mounts that file read-only at AgentPath
// in every sandbox it starts while the setting is on. Why this way:
//   - bind-mount sources are resolved by the engine on the node, and box.local.host_root is
//     the one directory that has the same absolute path on the node, in boxd's pod and in the
//     sandboxes (the workspaces already rely on it), so the file boxd writes is the file the
//     engine mounts;
//   - it works with read_only_rootfs (the engine creates the mount point before the root is
//     made read-only), and costs nothing per sandbox: no upload, no extra API call;
//   - CopyToContainer into a created container is refused for a read-only root file system,
//     and the only writable place then (the /tmp tmpfs) is mounted noexec;
//   - the boxd image stays FROM scratch: boxagent is one more static file next to /boxd.
//
// The file is checked against the binary's SHA-256 when installed, and its identity (device,
// inode, size, ctime) again before each sandbox start; a change re-installs it. Never mount
// host_root itself read-write into a sandbox (LangBot mounts workspaces below it).
//
// Whenever the agent cannot be used for a sandbox — the setting was off or host_root unset
// when it started, the binary is missing, the agent does not answer — Exec falls back to the
// Engine API exec path for that sandbox and logs it once.
const (
	// AgentPath is where the agent is mounted in a sandbox.
	AgentPath = "/.boxd-agent"
	// AgentBinaryEnv names the boxagent binary on boxd's file system (default: boxagent next to
	// the boxd executable).
	AgentBinaryEnv = "BOXD_EXEC_AGENT_BINARY"
	agentDir       = ".boxd"
)

// DefaultAgentBinary is $BOXD_EXEC_AGENT_BINARY, else boxagent next to the running
// executable when it exists, else "" (no agent).
func DefaultAgentBinary() string {
	if p := os.Getenv(AgentBinaryEnv); p != "" {
		return p
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "boxagent")
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p
	}
	return ""
}

// installedAgent is the agent file under one host root.
type installedAgent struct {
	path string
	id   fileID
}

type fileID struct {
	dev, ino  uint64
	size      int64
	ctimeSec  int64
	ctimeNsec int64
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{size: st.Size()}, nil
	}
	return fileID{dev: uint64(sys.Dev), ino: sys.Ino, size: st.Size(), ctimeSec: sys.Ctim.Sec, ctimeNsec: sys.Ctim.Nsec}, nil
}

// agentSession is the agent state of one sandbox.
type agentSession struct {
	mounted bool // false: started without the agent mount, Exec uses the Engine API path
	// offAtStart: started while the setting was off (logged once when it is on); a sandbox
	// whose agent could not be installed was already logged by agentMount. Both fields, like
	// mounted, are set under agents.mu.
	offAtStart, noted bool

	mu     sync.Mutex // held while connecting
	conn   *agentConn
	failed bool // the agent did not answer: Engine API path for the sandbox's lifetime
}

type agentConn struct {
	client *agent.Client
	att    types.HijackedResponse
	execID string
	stderr *agent.HeadBuffer
}

// ended describes how the agent's exec ended, for the log.
func (b *Backend) ended(ctx context.Context, c *agentConn) string {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	msg := fmt.Sprint(c.client.Err())
	if ins, err := b.cli.ContainerExecInspect(ctx, c.execID); err == nil {
		msg += fmt.Sprintf(" (agent exec running=%v exit code %d)", ins.Running, ins.ExitCode)
	}
	if s := c.stderr.String(); s != "" {
		msg += " (agent stderr: " + Collapse(s) + ")"
	}
	return msg
}

func (c *agentConn) close() { c.att.Close() }

// agents is the Backend's agent bookkeeping.
type agents struct {
	mu        sync.Mutex
	sessions  map[string]*agentSession // by container name
	installed map[string]installedAgent
	warned    map[string]bool
}

func newAgents() agents {
	return agents{sessions: map[string]*agentSession{}, installed: map[string]installedAgent{}, warned: map[string]bool{}}
}

// agentOn reports box.docker.exec_agent.
func (b *Backend) agentOn() bool { return b.opts.ExecAgent != nil && b.opts.ExecAgent() }

// warnOnce logs msg the first time it is seen.
func (b *Backend) warnOnce(msg string) {
	b.ag.mu.Lock()
	seen := b.ag.warned[msg]
	b.ag.warned[msg] = true
	b.ag.mu.Unlock()
	if !seen {
		b.log.Warn(msg)
	}
}

// agentMount returns the read-only bind mount of the agent for a new sandbox, installing the
// binary under host_root when needed; ok is false (and the reason logged once) when the
// sandbox has to do without.
func (b *Backend) agentMount() (mount.Mount, bool) {
	m, err := b.agentSource()
	if err != nil {
		b.warnOnce("LangBot Box exec agent unavailable, sandboxes use docker exec: " + err.Error())
		return mount.Mount{}, false
	}
	return m, true
}

// agentSource is agentMount without the fallback: the error says why there is no agent.
// Sandboxes with bind mounts need it whatever box.docker.exec_agent says (Start verifies
// their mounts with it).
func (b *Backend) agentSource() (mount.Mount, error) {
	root := ""
	if b.opts.HostRoot != nil {
		root = b.opts.HostRoot()
	}
	src, err := b.installAgent(root)
	if err != nil {
		return mount.Mount{}, err
	}
	return mount.Mount{Type: mount.TypeBind, Source: src, Target: AgentPath, ReadOnly: true}, nil
}

// installAgent places the agent binary under root (see the comment at the top) and returns
// the file's path.
func (b *Backend) installAgent(root string) (string, error) {
	switch {
	case root == "":
		return "", errors.New("box.local.host_root is not set (the agent is placed under it)")
	case b.opts.AgentBinary == "":
		return "", fmt.Errorf("no boxagent binary (next to boxd, or named by %s)", AgentBinaryEnv)
	}
	b.ag.mu.Lock()
	defer b.ag.mu.Unlock()
	if in, ok := b.ag.installed[root]; ok {
		if id, err := statID(in.path); err == nil && id == in.id {
			return in.path, nil
		}
		b.log.Warn("LangBot Box exec agent file changed on disk, installing it again: " + in.path)
		delete(b.ag.installed, root)
	}
	dst, err := InstallAgentFile(root, b.opts.AgentBinary)
	if err != nil {
		return "", err
	}
	id, err := statID(dst)
	if err != nil {
		return "", fmt.Errorf("stat installed agent: %w", err)
	}
	b.ag.installed[root] = installedAgent{path: dst, id: id}
	return dst, nil
}

// InstallAgentFile places the boxagent binary at <root>/.boxd/agent-<first 8 bytes of its
// SHA-256> (mode 0555, its directory 0755: only boxd may change them), unless that file already
// holds it, and returns the file's path. The Docker backend bind-mounts it into sandboxes; the
// kubernetes backend mounts it as a subPath of the box root claim.
func InstallAgentFile(root, binary string) (string, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return "", fmt.Errorf("read boxagent binary: %w", err)
	}
	sum := sha256.Sum256(data)
	dir := filepath.Join(root, agentDir)
	dst := filepath.Join(dir, "agent-"+hex.EncodeToString(sum[:8]))
	if cur, err := os.ReadFile(dst); err != nil || !bytes.Equal(cur, data) {
		if err := writeAgent(dir, dst, data); err != nil {
			return "", err
		}
	}
	return dst, nil
}

// writeAgent installs data as dst (mode 0555) atomically.
func writeAgent(dir, dst string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create agent directory %s: %w", dir, err)
	}
	if err := atomicfile.Write(dst, data, 0o555); err != nil {
		return fmt.Errorf("install agent file %s: %w", dst, err)
	}
	return nil
}

// noteStarted records whether a new sandbox has the agent mounted.
func (b *Backend) noteStarted(name string, mounted, agentOn bool) {
	b.ag.mu.Lock()
	b.ag.sessions[name] = &agentSession{mounted: mounted, offAtStart: !agentOn}
	b.ag.mu.Unlock()
}

// forget closes the agent connection of a removed sandbox.
func (b *Backend) forget(name string) {
	b.ag.mu.Lock()
	st := b.ag.sessions[name]
	delete(b.ag.sessions, name)
	b.ag.mu.Unlock()
	if st != nil {
		st.mu.Lock()
		if st.conn != nil {
			st.conn.close()
			st.conn = nil
		}
		st.mu.Unlock()
	}
}

// closeAgents closes every agent connection (Backend.Close).
func (b *Backend) closeAgents() {
	b.ag.mu.Lock()
	names := make([]string, 0, len(b.ag.sessions))
	for n := range b.ag.sessions {
		names = append(names, n)
	}
	b.ag.mu.Unlock()
	for _, n := range names {
		b.forget(n)
	}
}

// agentConnected reports whether the sandbox's agent connection is up.
func (b *Backend) agentConnected(h backend.Handle) bool {
	b.ag.mu.Lock()
	st := b.ag.sessions[h.ID]
	b.ag.mu.Unlock()
	if st == nil || !st.mounted || !st.mu.TryLock() {
		return false
	}
	defer st.mu.Unlock()
	return st.conn != nil && st.conn.client.Err() == nil
}

// agentFor returns a connected agent client for the sandbox, or nil when Exec has to use the
// Engine API path. A sandbox this backend did not start (re-adopted after a restart) is tried
// once.
func (b *Backend) agentFor(ctx context.Context, h backend.Handle) *agentConn {
	b.ag.mu.Lock()
	st := b.ag.sessions[h.ID]
	if st == nil {
		st = &agentSession{mounted: true}
		b.ag.sessions[h.ID] = st
	}
	note := !st.mounted && st.offAtStart && !st.noted
	st.noted = st.noted || note
	b.ag.mu.Unlock()
	if note {
		b.log.Info("LangBot Box exec agent not in this sandbox (started while box.docker.exec_agent was off), using docker exec: container=" + h.ID)
	}
	if !st.mounted {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.conn != nil {
		select {
		case <-st.conn.client.Done():
			// The agent or its exec ended (it should not): start another one.
			b.log.Warn(fmt.Sprintf("LangBot Box exec agent connection lost: container=%s: %s", h.ID, b.ended(ctx, st.conn)))
			st.conn.close()
			st.conn = nil
		default:
			return st.conn
		}
	}
	if st.failed {
		return nil
	}
	c, err := b.startAgent(ctx, h)
	if err != nil {
		if ctx.Err() == nil {
			st.failed = true
			b.log.Warn(fmt.Sprintf("LangBot Box exec agent unavailable, using docker exec for this sandbox: container=%s: %v", h.ID, err))
		}
		return nil
	}
	st.conn = c
	return c
}

// recorder keeps the first bytes read through it until off is set.
type recorder struct {
	r   io.Reader
	off atomic.Bool
	mu  sync.Mutex
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 && !r.off.Load() {
		r.mu.Lock()
		if room := 512 - len(r.buf); room > 0 {
			r.buf = append(r.buf, p[:min(room, n)]...)
		}
		r.mu.Unlock()
	}
	return n, err
}

// text is what was recorded, non-printable bytes as spaces.
func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]byte, len(r.buf))
	for i, c := range r.buf {
		if c < 0x20 || c > 0x7e {
			c = ' '
		}
		out[i] = c
	}
	return strings.TrimSpace(string(out))
}

// startAgent starts the agent in the sandbox through one exec with stdin and stdout attached,
// and waits (within probeTimeout) for its hello.
func (b *Backend) startAgent(ctx context.Context, h backend.Handle) (*agentConn, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: []string{AgentPath}, Env: []string{agent.EnvMark},
		AttachStdin: true, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, fmt.Errorf("create agent exec: %w", err)
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("attach agent exec: %w", err)
	}
	pr, pw := io.Pipe()
	var stderr agent.HeadBuffer
	go func() {
		_, err := stdcopy.StdCopy(pw, &stderr, att.Reader)
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
	}()
	// The first bytes are kept: when the exec could not start the agent, the engine writes its
	// error there instead of a hello.
	first := &recorder{r: pr}
	client, err := agent.Dial(ctx, first, att.Conn)
	first.off.Store(true)
	if err != nil {
		att.Close()
		if msg := first.text(); msg != "" {
			err = fmt.Errorf("%w (the agent's exec said: %s)", err, Collapse(msg))
		}
		if msg := stderr.String(); msg != "" {
			err = fmt.Errorf("%w (agent stderr: %s)", err, Collapse(msg))
		}
		return nil, err
	}
	return &agentConn{client: client, att: att, execID: created.ID, stderr: &stderr}, nil
}

// execAgent runs req through the sandbox's agent. handled is false when the request must take
// the Engine API path instead (a command too large for one frame; that path then reports
// what the kernel says about it).
func (b *Backend) execAgent(ctx context.Context, h backend.Handle, c *agentConn, req backend.ExecRequest) (res backend.ExecResult, err error, handled bool) {
	code, err := c.client.Run(ctx, agent.Command{Argv: req.Argv, Env: envList(req.Env)}, req.Stdout, req.Stderr)
	switch {
	case err == nil:
		return backend.ExecResult{ExitCode: code}, nil, true
	case errors.Is(err, agent.ErrFrameTooLarge):
		return backend.ExecResult{}, nil, false
	case ctx.Err() != nil:
		return backend.ExecResult{}, ctx.Err(), true
	}
	if !b.Alive(context.WithoutCancel(ctx), h) {
		return backend.ExecResult{}, fmt.Errorf("exec in %s: %w: %v", h.ID, backend.ErrNotFound, err), true
	}
	b.log.Warn(fmt.Sprintf("LangBot Box exec agent failed: container=%s: %s", h.ID, b.ended(context.WithoutCancel(ctx), c)))
	return backend.ExecResult{}, backendErr(fmt.Errorf("exec through the agent in %s: %w", h.ID, err)), true
}

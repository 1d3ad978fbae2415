// Package docker is the Docker Engine backend: sandboxes are containers created through the
// Engine API (DOCKER_HOST, API version negotiation; Docker 20.10 / API 1.41 works, and so
// does a Podman socket), named and labelled as the Python runtime does (§9.1) so both
// recognise what they own. No `docker` CLI is involved.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Labels shared with the Python runtime (§9.1.2), plus boxd's own.
const (
	LabelBox      = "langbot.box"
	LabelSession  = "langbot.session_id"
	LabelInstance = "langbot.box.instance_id"
	// LabelPersistent and LabelSpec let a restarted boxd rebuild a persistent session.
	LabelPersistent = "langbot.box.persistent"
	LabelSpec       = "langbot.box.spec"
	// LabelScope is set only when Options.Scope is non-empty: Recover touches only
	// containers of its own scope, so several runtimes can share one engine.
	LabelScope = "langbot.box.scope"

	// KeepAlive is the sandbox's main command (§9.1.2), run as `sh -lc KeepAlive`.
	KeepAlive = "while true; do sleep 3600; done"
	// TmpfsSize is the size of the /tmp tmpfs of a read-only root file system.
	TmpfsSize = "size=64m"

	// PullTimeout bounds pulling a missing image (the reference's 30 s is far too short for a
	// first pull and then silently "succeeds" without a container).
	PullTimeout = 10 * time.Minute
	// CreateTimeout bounds container create + start once the image is present.
	CreateTimeout = 60 * time.Second
	probeTimeout  = 5 * time.Second
	listTimeout   = 30 * time.Second
)

// Options configure the backend.
type Options struct {
	// InstanceID is the runtime's random per-process id, stored in langbot.box.instance_id.
	InstanceID string
	// CPULimitEnabled applies spec.cpus as NanoCPUs (box.docker.cpu_limit_enabled).
	CPULimitEnabled bool
	// Hardening drops every capability and sets no-new-privileges (boxd's default, beyond
	// 0.5.5; the default seccomp profile is never disabled). `box.docker.hardening: false`
	// turns it off for images that need capabilities (e.g. apt-get, chown, ping).
	Hardening bool
	// Scope, when set, is written to langbot.box.scope on every container and confines
	// Recover to containers of the same scope. Empty = 0.5.5 behaviour: every unscoped
	// container labelled langbot.box=true is this runtime's (including Python ones).
	Scope string
	// AllowedMountRoots, when it returns roots, confines every bind mount (defence in depth,
	// §10.2). It is a function because box_init can change the roots at any time.
	AllowedMountRoots func() []string
	// ExecAgent reports box.docker.exec_agent (read at every Start and Exec; nil = off): run
	// commands through the in-sandbox agent (agent.go) instead of one Engine API exec each.
	ExecAgent func() bool
	// HostRoot reports box.local.host_root, under which the agent binary is placed for
	// bind-mounting (nil or "" = no agent).
	HostRoot func() string
	// AgentBinary is the boxagent binary on boxd's file system ("" = no agent); see
	// DefaultAgentBinary.
	AgentBinary string
	// SandboxUser reports box.docker.user (read at every Start; nil or "" = the image's user,
	// root for most images): "<uid>" or "<uid>:<gid>" the sandbox and its commands run as.
	SandboxUser func() string
	Logger      *slog.Logger
}

// settings are the box_init-controlled knobs, changed while sessions start.
type settings struct {
	cpuLimit, hardening bool
	user                string // the sandbox user (Options.SandboxUser), "" = the image's
}

// Backend talks to one Docker Engine. It is safe for concurrent use.
type Backend struct {
	cli  *client.Client
	opts Options
	log  *slog.Logger

	mu  sync.RWMutex
	set settings

	ag agents
}

// New connects to the engine named by the environment (DOCKER_HOST, DOCKER_API_VERSION,
// DOCKER_CERT_PATH, DOCKER_TLS_VERIFY). The API version is negotiated on first use, so an
// engine that is down at start-up does not prevent boxd from starting (readiness reports it).
func New(ctx context.Context, opts Options) (*Backend, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create docker client from the environment (check DOCKER_HOST): %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AllowedMountRoots == nil {
		opts.AllowedMountRoots = func() []string { return nil }
	}
	if opts.InstanceID == "" {
		return nil, fmt.Errorf("docker backend: Options.InstanceID is empty: pass the runtime's instance id")
	}
	b := &Backend{cli: cli, opts: opts, log: opts.Logger, set: settings{cpuLimit: opts.CPULimitEnabled, hardening: opts.Hardening},
		ag: newAgents()}
	// Negotiate now when the engine answers, so the first sandbox does not pay for it.
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cli.NegotiateAPIVersion(pctx)
	return b, nil
}

// Close ends the exec agents' connections and releases the client's connections.
func (b *Backend) Close() error {
	b.closeAgents()
	return b.cli.Close()
}

// Configure applies the box_init knobs (box.docker.cpu_limit_enabled, box.docker.hardening).
func (b *Backend) Configure(cpuLimit, hardening bool) {
	b.mu.Lock()
	was := b.set.cpuLimit
	b.set = settings{cpuLimit: cpuLimit, hardening: hardening}
	b.mu.Unlock()
	if !cpuLimit && was {
		b.log.Warn("Docker sandbox CPU limit is disabled by config (box.docker.cpu_limit_enabled=false); containers will be started without --cpus.")
	}
}

func (b *Backend) sandboxUser() string {
	if b.opts.SandboxUser == nil {
		return ""
	}
	return b.opts.SandboxUser()
}

func (b *Backend) settings() settings {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.set
}

// Info implements backend.Backend.
func (b *Backend) Info() backend.Info { return backend.Info{Name: "docker"} }

// Available pings the engine within 5 s (§9.1.1).
func (b *Backend) Available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := b.cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	return nil
}

var nameRun = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// ContainerName is langbot-box-<sanitised physical id, ≤32 chars>-<8 random hex> (§9.1.2).
func ContainerName(physical string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return containerName(physical, hex.EncodeToString(r[:]))
}

func containerName(physical, suffix string) string {
	s := strings.ToLower(strings.Trim(nameRun.ReplaceAllString(physical, "-"), "-"))
	if s == "" {
		s = "session"
	}
	if len(s) > 32 {
		s = s[:32]
	}
	return "langbot-box-" + s + "-" + suffix
}

// Collapse formats an engine message as the reference does (§9.1.2): whitespace runs
// collapsed to one space, "unknown backend error" when empty, cut to 297 characters + "..."
// when longer than 300 characters.
func Collapse(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "unknown backend error"
	}
	if r := []rune(s); len(r) > 300 {
		return string(r[:297]) + "..."
	}
	return s
}

// backendErr is reported by the session layer as `BoxError: docker backend error: <text>`.
func backendErr(err error) error {
	return &backend.Error{Message: "docker backend error: " + Collapse(err.Error()), Err: err}
}

// allMounts lists the bind mounts of spec, workspace first (mounts.SpecWants).
func allMounts(spec backend.SessionSpec) []backend.Mount {
	var all []backend.Mount
	for _, w := range mounts.SpecWants(spec) {
		all = append(all, w.Mount)
	}
	return all
}

// containerConfig builds what `docker run` of §9.1.2 would create, plus boxd's hardening.
// binds are the validated mounts (host paths resolved); the spec label keeps spec as given.
func containerConfig(spec backend.SessionSpec, binds []backend.Mount, set settings, instanceID, scope string) (*container.Config, *container.HostConfig, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("encode session spec label: %w", err)
	}
	labels := map[string]string{
		LabelBox: "true", LabelSession: spec.PhysicalID, LabelInstance: instanceID,
		LabelPersistent: fmt.Sprint(spec.Persistent), LabelSpec: string(specJSON),
	}
	if scope != "" {
		labels[LabelScope] = scope
	}
	cfg := &container.Config{Image: spec.Image, Cmd: []string{"sh", "-lc", KeepAlive}, Labels: labels, User: set.user}
	pids := int64(spec.PidsLimit)
	hc := &container.HostConfig{
		AutoRemove: !spec.Persistent,
		Resources:  container.Resources{Memory: int64(spec.MemoryMB) << 20, PidsLimit: &pids},
	}
	if !spec.NetworkOn {
		hc.NetworkMode = "none"
	}
	if set.cpuLimit {
		hc.NanoCPUs = int64(spec.CPUs * 1e9)
	}
	if spec.ReadOnlyRootfs {
		hc.ReadonlyRootfs = true
		hc.Tmpfs = map[string]string{"/tmp": TmpfsSize}
	}
	if set.hardening {
		hc.CapDrop = []string{"ALL"}
		hc.SecurityOpt = []string{"no-new-privileges"}
	}
	for _, m := range binds {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.HostPath, Target: m.MountPath, ReadOnly: m.Mode == backend.MountRO})
	}
	return cfg, hc, nil
}

// policy is the mount policy in force: box_init's roots and host_root, and the engine's socket.
func (b *Backend) policy() mounts.Policy {
	p := mounts.Policy{Roots: b.opts.AllowedMountRoots(), Sockets: engineSockets(b.cli.DaemonHost(), os.Getenv(client.EnvOverrideHost))}
	if b.opts.HostRoot != nil {
		p.HostRoot = b.opts.HostRoot()
	}
	return p
}

// engineSockets are the unix socket paths among the engine addresses boxd is configured with.
func engineSockets(hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		if p, ok := strings.CutPrefix(h, "unix://"); ok && p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Start validates and opens the mount sources (creating the workspace directory), makes sure
// the image is present (pulling it within PullTimeout), creates + starts the container and,
// when it has bind mounts, verifies inside it that each mount target is the directory that
// was validated (see verifyMounts) before the sandbox is handed out.
func (b *Backend) Start(ctx context.Context, spec backend.SessionSpec) (backend.Handle, error) {
	pol := b.policy()
	if spec.HostPath != "" {
		// §10.1 applies to host_path whatever its mode, with the reference's message.
		if err := pol.CheckBlocked(spec.HostPath); err != nil {
			return backend.Handle{}, err
		}
	}
	srcs, err := mounts.Prepare(mounts.SpecWants(spec), pol)
	if err != nil {
		if _, ok := err.(*backend.ValidationError); ok {
			return backend.Handle{}, err
		}
		return backend.Handle{}, backendErr(err)
	}
	defer srcs.Close()
	if err := b.ensureImage(ctx, spec.Image); err != nil {
		return backend.Handle{}, backendErr(err)
	}
	set := b.settings()
	set.user = b.sandboxUser()
	cfg, hc, err := containerConfig(spec, srcs.Mounts(), set, b.opts.InstanceID, b.opts.Scope)
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	// The agent is mounted for commands when box.docker.exec_agent is on, and for verifying
	// the bind mounts whenever there are some.
	withAgent, agentOn := false, b.agentOn()
	switch {
	case len(srcs) > 0:
		m, err := b.agentSource()
		if err != nil {
			return backend.Handle{}, backendErr(fmt.Errorf("bind mounts are verified inside the sandbox with boxd's agent, which is unavailable: %w", err))
		}
		hc.Mounts, withAgent = append(hc.Mounts, m), true
	case agentOn:
		var m mount.Mount
		if m, withAgent = b.agentMount(); withAgent {
			hc.Mounts = append(hc.Mounts, m)
		}
	}
	name := ContainerName(spec.PhysicalID)
	b.log.Info(fmt.Sprintf("LangBot Box backend start_session: backend=docker session_id=%s container=%s image=%s", spec.PhysicalID, name, spec.Image))
	cctx, cancel := context.WithTimeout(ctx, CreateTimeout)
	defer cancel()
	created, err := b.cli.ContainerCreate(cctx, cfg, hc, nil, nil, name)
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	if err := b.cli.ContainerStart(cctx, created.ID, container.StartOptions{}); err != nil {
		b.removeFailed(ctx, created.ID, name, "a failed start")
		return backend.Handle{}, backendErr(err)
	}
	b.noteStarted(name, withAgent && agentOn, agentOn)
	h := backend.Handle{ID: name}
	if err := b.verifyMounts(cctx, h, srcs); err != nil {
		b.log.Error(fmt.Sprintf("LangBot Box refused a sandbox whose mounts are not what was validated: session_id=%s container=%s: %v", spec.PhysicalID, name, err))
		b.forget(name)
		b.removeFailed(ctx, created.ID, name, "a failed mount check")
		return backend.Handle{}, err
	}
	return h, nil
}

// removeFailed force-removes a container that is not handed out (bounded, whatever ctx).
func (b *Backend) removeFailed(ctx context.Context, id, name, why string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backend.DefaultStopTimeout)
	defer cancel()
	if err := b.cli.ContainerRemove(rctx, id, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
		b.log.Warn(fmt.Sprintf("remove container %s after %s: %v", name, why, err))
	}
}

// verifyMounts checks, inside the started sandbox and before anything else runs there, that
// every bind mount target has the device and inode of the source Prepare validated: the
// engine resolves a source path again when it mounts it, so a path component swapped for a
// symlink in between would otherwise mount whatever the symlink points to. The check runs
// boxd's own static agent (`/.boxd-agent stat <targets>`, mounted read-only from host_root),
// so it works on any image; through the agent connection when the exec agent is on (which
// then serves the session's first command), through one Engine API exec otherwise. Any
// failure to verify counts as a mismatch.
func (b *Backend) verifyMounts(ctx context.Context, h backend.Handle, srcs mounts.Sources) error {
	if len(srcs) == 0 {
		return nil
	}
	stdout, stderr := agent.HeadBuffer{Limit: 64 << 10}, agent.HeadBuffer{}
	res, err := b.Exec(ctx, h, backend.ExecRequest{Argv: append([]string{AgentPath, "stat"}, srcs.Targets()...), Stdout: &stdout, Stderr: &stderr})
	switch {
	case err != nil:
		return &backend.ValidationError{Message: fmt.Sprintf("the sandbox's mounts could not be verified: %v", err)}
	case res.ExitCode != 0:
		return &backend.ValidationError{Message: fmt.Sprintf("the sandbox's mounts could not be verified: %s stat exited with %d: %s", AgentPath, res.ExitCode, Collapse(stderr.String()))}
	}
	return srcs.Verify(stdout.String())
}

// ensureImage pulls ref when the engine does not have it. The pull gets its own, longer
// deadline (PullTimeout) but still ends when the caller gives up.
func (b *Backend) ensureImage(ctx context.Context, ref string) error {
	_, err := b.cli.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !errdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	b.log.Info(fmt.Sprintf("LangBot Box backend pulling image: backend=docker image=%s", ref))
	pctx, cancel := context.WithTimeout(ctx, PullTimeout)
	defer cancel()
	rc, err := b.cli.ImagePull(pctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("image %s is not present and could not be pulled: %w", ref, err)
	}
	defer rc.Close()
	// The pull reports failures inside its JSON progress stream.
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("pull image %s: %w", ref, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("image %s is not present and could not be pulled: %s", ref, msg.Error)
		}
	}
	if _, err := b.cli.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("image %s is not present after pull: %w", ref, err)
	}
	return nil
}

// CgroupV2 reports whether the engine runs sandboxes on cgroup v2 (docker info): the one
// isolation fact of grant-enforced readiness boxd can establish for Docker.
func (b *Backend) CgroupV2(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	info, err := b.cli.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("docker info: %w", err)
	}
	return info.CgroupVersion == "2", nil
}

// ExecProbesLiveness: an Engine API exec in a removed or stopped container is refused before
// anything runs (ErrNotStarted), so the exec itself is the liveness probe of a reused session.
func (b *Backend) ExecProbesLiveness() bool { return true }

// Alive reports whether the container runs; probe errors count as dead (§9.1.4). A sandbox
// whose exec agent is connected runs (the engine ends the agent's exec stream when the
// container stops), so it costs no Engine API call.
func (b *Backend) Alive(ctx context.Context, h backend.Handle) bool {
	if b.agentConnected(h) {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := b.cli.ContainerInspect(ctx, h.ID)
	return err == nil && st.State != nil && st.State.Running
}

// Stop force-removes the container within 20 s; a missing container is not an error.
func (b *Backend) Stop(ctx context.Context, h backend.Handle) error {
	ctx, cancel := context.WithTimeout(ctx, backend.DefaultStopTimeout)
	defer cancel()
	b.log.Info("LangBot Box backend stop_session: backend=docker container=" + h.ID)
	b.forget(h.ID)
	err := b.cli.ContainerRemove(ctx, h.ID, container.RemoveOptions{Force: true})
	if err != nil && !errdefs.IsNotFound(err) && !strings.Contains(err.Error(), "is already in progress") {
		return fmt.Errorf("remove container %s: %w", h.ID, err)
	}
	return nil
}

// Package docker is the Docker Engine backend: sandboxes are containers created through the
// Engine API (DOCKER_HOST, API version negotiation; Docker 20.10 / API 1.41 works), named and
// labelled as the Python runtime does (§9.1) so both recognise what they own.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Labels shared with the Python runtime, plus boxd's own for re-adoption.
const (
	LabelBox        = "langbot.box"
	LabelSession    = "langbot.session_id"
	LabelInstance   = "langbot.box.instance_id"
	LabelPersistent = "langbot.box.persistent" // boxd only
	LabelSpec       = "langbot.box.spec"       // boxd only: JSON of the session spec
	keepAlive       = "while true; do sleep 3600; done"
	pullTimeout     = 10 * time.Minute
)

// Options configure the backend.
type Options struct {
	InstanceID      string
	CPULimitEnabled bool
	// Hardening drops every capability and sets no-new-privileges (boxd's default).
	Hardening bool
	// AllowedMountRoots, when non-empty, confine every bind mount (defence in depth).
	AllowedMountRoots func() []string
	Logger            *slog.Logger
}

// Backend talks to one Docker Engine.
type Backend struct {
	cli  *client.Client
	opts Options
}

// New connects to the engine named by the environment (DOCKER_HOST etc.).
func New(opts Options) (*Backend, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AllowedMountRoots == nil {
		opts.AllowedMountRoots = func() []string { return nil }
	}
	return &Backend{cli: cli, opts: opts}, nil
}

// Configure updates the settings box_init carries.
func (b *Backend) Configure(cpuLimit, hardening bool) {
	if !cpuLimit && b.opts.CPULimitEnabled {
		b.opts.Logger.Warn("Docker sandbox CPU limit is disabled by config (box.docker.cpu_limit_enabled=false); containers will be started without --cpus.")
	}
	b.opts.CPULimitEnabled, b.opts.Hardening = cpuLimit, hardening
}

// Info implements backend.Backend.
func (b *Backend) Info() backend.Info { return backend.Info{Name: "docker"} }

// Available pings the engine within 5 s.
func (b *Backend) Available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	return nil
}

var nameRun = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// ContainerName is langbot-box-<sanitised physical id, ≤32>-<8 hex> (§9.1.2).
func ContainerName(physical string) string {
	s := strings.ToLower(strings.Trim(nameRun.ReplaceAllString(physical, "-"), "-"))
	if s == "" {
		s = "session"
	}
	if len(s) > 32 {
		s = s[:32]
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "langbot-box-" + s + "-" + hex.EncodeToString(r[:])
}

// collapse formats engine errors as the reference does: whitespace collapsed, ≤300 chars.
func collapse(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		s = "unknown backend error"
	}
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}

func backendErr(err error) error {
	return &backend.Error{Message: "docker backend error: " + collapse(err.Error()), Err: err}
}

// Start creates and starts the container of spec.
func (b *Backend) Start(ctx context.Context, spec backend.SessionSpec) (backend.Handle, error) {
	all := append([]backend.Mount(nil), spec.ExtraMounts...)
	if spec.HostPath != "" && spec.HostPathMode != backend.MountNone {
		all = append([]backend.Mount{{HostPath: spec.HostPath, MountPath: spec.MountPath, Mode: spec.HostPathMode}}, all...)
	}
	if spec.HostPath != "" {
		if err := mounts.CheckBlocked(spec.HostPath); err != nil {
			return backend.Handle{}, err
		}
	}
	if err := mounts.Validate(all, b.opts.AllowedMountRoots()); err != nil {
		return backend.Handle{}, err
	}
	if spec.HostPath != "" && spec.HostPathMode != backend.MountNone {
		if err := os.MkdirAll(spec.HostPath, 0o755); err != nil {
			return backend.Handle{}, backendErr(fmt.Errorf("create host_path %s: %w", spec.HostPath, err))
		}
	}
	if err := b.ensureImage(ctx, spec.Image); err != nil {
		return backend.Handle{}, backendErr(err)
	}
	specJSON, _ := json.Marshal(spec)
	name := ContainerName(spec.PhysicalID)
	cfg := &container.Config{
		Image: spec.Image,
		Cmd:   []string{"sh", "-lc", keepAlive},
		Labels: map[string]string{LabelBox: "true", LabelSession: spec.PhysicalID, LabelInstance: b.opts.InstanceID,
			LabelPersistent: fmt.Sprint(spec.Persistent), LabelSpec: string(specJSON)},
	}
	pids := int64(spec.PidsLimit)
	hc := &container.HostConfig{
		AutoRemove: !spec.Persistent,
		Resources:  container.Resources{Memory: int64(spec.MemoryMB) << 20, PidsLimit: &pids},
	}
	if !spec.NetworkOn {
		hc.NetworkMode = "none"
	}
	if b.opts.CPULimitEnabled {
		hc.Resources.NanoCPUs = int64(spec.CPUs * 1e9)
	}
	if spec.ReadOnlyRootfs {
		hc.ReadonlyRootfs = true
		hc.Tmpfs = map[string]string{"/tmp": "size=64m"}
	}
	if b.opts.Hardening {
		hc.CapDrop = []string{"ALL"}
		hc.SecurityOpt = []string{"no-new-privileges"}
	}
	for _, m := range all {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.HostPath, Target: m.MountPath, ReadOnly: m.Mode == backend.MountRO})
	}
	b.opts.Logger.Info(fmt.Sprintf("LangBot Box backend start_session: backend=docker session_id=%s container=%s image=%s", spec.PhysicalID, name, spec.Image))
	created, err := b.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		_ = b.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
		return backend.Handle{}, backendErr(err)
	}
	return backend.Handle{ID: name}, nil
}

func (b *Backend) ensureImage(ctx context.Context, ref string) error {
	if _, err := b.cli.ImageInspect(ctx, ref); err == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	rc, err := b.cli.ImagePull(pctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("image %s is not present and could not be pulled: %w", ref, err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	if _, err := b.cli.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("image %s is not present after pull: %w", ref, err)
	}
	return nil
}

// Alive reports whether the container runs (probe errors count as dead).
func (b *Backend) Alive(ctx context.Context, h backend.Handle) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := b.cli.ContainerInspect(ctx, h.ID)
	return err == nil && st.State != nil && st.State.Running
}

// Stop force-removes the container; a missing container is not an error.
func (b *Backend) Stop(ctx context.Context, h backend.Handle) error {
	ctx, cancel := context.WithTimeout(ctx, backend.DefaultStopTimeout)
	defer cancel()
	b.opts.Logger.Info("LangBot Box backend stop_session: backend=docker container=" + h.ID)
	err := b.cli.ContainerRemove(ctx, h.ID, container.RemoveOptions{Force: true})
	if err != nil && !errdefs.IsNotFound(err) && !strings.Contains(err.Error(), "is already in progress") {
		return fmt.Errorf("remove container %s: %w", h.ID, err)
	}
	return nil
}

func envList(env []backend.EnvVar) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		out = append(out, e.Key+"="+e.Value)
	}
	return out
}

// Exec runs argv and streams its output; cancelling ctx abandons the exec (the session
// layer then removes the container, which ends the command).
func (b *Backend) Exec(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: req.Argv, Env: envList(req.Env), AttachStdout: true, AttachStderr: true})
	if err != nil {
		if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
			return backend.ExecResult{}, fmt.Errorf("exec in %s: %w: %v", h.ID, backend.ErrNotFound, err)
		}
		return backend.ExecResult{}, backendErr(err)
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return backend.ExecResult{}, backendErr(err)
	}
	defer att.Close()
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(req.Stdout, req.Stderr, att.Reader)
		copied <- err
	}()
	select {
	case <-ctx.Done():
		att.Close()
		return backend.ExecResult{}, ctx.Err()
	case err := <-copied:
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			return backend.ExecResult{}, backendErr(err)
		}
	}
	ins, err := b.cli.ContainerExecInspect(context.WithoutCancel(ctx), created.ID)
	if err != nil {
		return backend.ExecResult{}, backendErr(err)
	}
	return backend.ExecResult{ExitCode: ins.ExitCode}, nil
}

// CleanupOrphans removes containers labelled langbot.box=true of another instance, except
// running persistent ones, which are returned for re-adoption.
func (b *Backend) CleanupOrphans(ctx context.Context, currentInstanceID string) (int, error) {
	adopted, removed, err := b.Recover(ctx, currentInstanceID)
	_ = adopted
	return removed, err
}

// Adopted is a persistent sandbox that survived a restart.
type Adopted struct {
	Spec    backend.SessionSpec
	Handle  backend.Handle
	Created time.Time
}

// Recover runs the start-up orphan cleanup (§9.1.6) with boxd's extension: running persistent
// containers that carry a boxd spec label are kept and relabelled for this instance.
func (b *Backend) Recover(ctx context.Context, currentInstanceID string) ([]Adopted, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelBox+"=true"))})
	if err != nil {
		return nil, 0, fmt.Errorf("list box containers: %w", err)
	}
	var adopted []Adopted
	removed := 0
	for _, c := range list {
		if c.Labels[LabelInstance] == currentInstanceID {
			continue
		}
		name := strings.TrimPrefix(firstOr(c.Names, c.ID), "/")
		if c.Labels[LabelPersistent] == "true" && c.State == "running" && c.Labels[LabelSpec] != "" {
			var spec backend.SessionSpec
			if json.Unmarshal([]byte(c.Labels[LabelSpec]), &spec) == nil && spec.PhysicalID != "" {
				adopted = append(adopted, Adopted{Spec: spec, Handle: backend.Handle{ID: name}, Created: time.Unix(c.Created, 0)})
				continue
			}
		}
		b.opts.Logger.Info("Cleaning up orphaned Box container: " + c.ID[:12])
		if err := b.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err == nil {
			removed++
		}
	}
	return adopted, removed, nil
}

func firstOr(xs []string, def string) string {
	if len(xs) > 0 {
		return xs[0]
	}
	return def
}

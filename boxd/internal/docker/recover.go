package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// verdict is what start-up recovery does with one container.
type verdict int

const (
	keep   verdict = iota // not ours (another scope) or this very instance's
	adopt                 // a running persistent boxd sandbox: back into the session table
	remove                // an orphan (§9.1.6)
)

// classify decides the fate of a container labelled langbot.box=true. Containers of another
// scope are never touched; an unscoped runtime owns every unscoped container, including the
// Python runtime's (which carry no spec label and are therefore removed, as 0.5.5 does).
func classify(labels map[string]string, running bool, instanceID, scope string) (verdict, backend.SessionSpec) {
	if labels[LabelScope] != scope || labels[LabelInstance] == instanceID {
		return keep, backend.SessionSpec{}
	}
	if labels[LabelPersistent] == "true" && running && labels[LabelSpec] != "" {
		var spec backend.SessionSpec
		if err := json.Unmarshal([]byte(labels[LabelSpec]), &spec); err == nil && spec.PhysicalID != "" &&
			spec.PhysicalID == labels[LabelSession] && spec.Persistent {
			return adopt, spec
		}
	}
	return remove, backend.SessionSpec{}
}

// Recover implements backend.Backend: the start-up orphan cleanup of §9.1.6, except that
// running persistent boxd sandboxes are returned for re-adoption instead of being removed
// (their leftover managed processes are killed first).
// Docker cannot relabel a container, so an adopted container keeps the instance id of the
// runtime that created it; it is adopted again by every later start for as long as it runs.
func (b *Backend) Recover(ctx context.Context, currentInstanceID string) ([]backend.Adopted, int, error) {
	return b.recover(ctx, currentInstanceID, func(string) bool { return false })
}

// recover is Recover leaving alone the running containers known says are in the session
// table already (sandboxes adopted by an earlier pass).
func (b *Backend) recover(ctx context.Context, currentInstanceID string, known func(name string) bool) ([]backend.Adopted, int, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	list, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelBox+"=true"))})
	if err != nil {
		return nil, 0, fmt.Errorf("list containers labelled %s=true: %w", LabelBox, err)
	}
	var adopted []backend.Adopted
	removed := 0
	var failed []string
	for _, c := range list {
		v, spec := classify(c.Labels, c.State == "running", currentInstanceID, b.opts.Scope)
		switch v {
		case keep:
			continue
		case adopt:
			name := c.ID
			if len(c.Names) > 0 {
				name = strings.TrimPrefix(c.Names[0], "/")
			}
			if known(name) {
				continue
			}
			h := backend.Handle{ID: name}
			// Its managed processes lost their pipes with the previous runtime: end them, so
			// the sandbox matches the session table (no processes) it is adopted into.
			if err := b.runQuiet(ctx, h, "sh", "-c", reapScript); err != nil {
				b.log.Warn(fmt.Sprintf("end stale managed processes in re-adopted container %s: %v", name, err))
			}
			adopted = append(adopted, backend.Adopted{Spec: spec, Handle: h, Created: time.Unix(c.Created, 0)})
			continue
		}
		short := c.ID
		if len(short) > 12 {
			short = short[:12]
		}
		b.log.Info("Cleaning up orphaned Box container: " + short)
		err := b.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		switch {
		case err == nil:
			removed++
		case errdefs.IsNotFound(err) || strings.Contains(err.Error(), "is already in progress"):
			// An auto-remove container that went away on its own: nothing left to do.
		default:
			failed = append(failed, fmt.Sprintf("%s: %v", short, err))
		}
	}
	if len(failed) > 0 {
		return adopted, removed, fmt.Errorf("remove orphaned containers: %s", strings.Join(failed, "; "))
	}
	return adopted, removed, nil
}

// engineRetry is how often a lost engine is pinged until it answers again.
const engineRetry = time.Second

// Recovered receives the result of a recovery pass run after the engine came back.
type Recovered func(ctx context.Context, adopted []backend.Adopted, removed int, err error)

// WatchEngine runs until ctx ends. It follows the engine's event stream; when the stream
// breaks (the engine stopped, restarted or became unreachable) it pings the engine every
// engineRetry until it answers, then runs the start-up recovery again (Recover; running
// containers known says are in the session table are left alone) and hands the result to
// done. Containers of an instance
// that died while the engine was down are thus removed (or re-adopted) when it comes back,
// not at boxd's next start. up says whether the engine answered at start-up, where the
// runtime already ran Recover.
func (b *Backend) WatchEngine(ctx context.Context, up bool, known func(name string) bool, done Recovered) {
	for {
		if !up {
			if !b.awaitEngine(ctx) {
				return
			}
			b.log.Info("LangBot Box Docker engine is back: running orphan recovery")
			adopted, removed, err := b.recover(ctx, b.opts.InstanceID, known)
			done(ctx, adopted, removed, err)
		}
		err := b.followEvents(ctx)
		if ctx.Err() != nil {
			return
		}
		b.log.Warn(fmt.Sprintf("LangBot Box lost the Docker engine's event stream: %v", err))
		// The engine stopped or restarted (its containers with it), or only the stream broke:
		// either way recover once it answers, at most once per engineRetry.
		up = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(engineRetry):
		}
	}
}

// awaitEngine pings every engineRetry until the engine answers (true) or ctx ends (false).
func (b *Backend) awaitEngine(ctx context.Context) bool {
	t := time.NewTicker(engineRetry)
	defer t.Stop()
	for b.Available(ctx) != nil {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// followEvents reads the engine's events about langbot.box containers (nothing is done
// with them: the stream is how a lost engine is noticed at once) until the stream fails.
func (b *Backend) followEvents(ctx context.Context) error {
	msgs, errs := b.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelBox+"=true"))})
	for {
		select {
		case <-msgs:
		case err := <-errs:
			return err
		}
	}
}

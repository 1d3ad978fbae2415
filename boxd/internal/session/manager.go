package session

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// TTL of idle non-persistent sessions and the reaper period (§8.4).
const (
	TTL          = 300 * time.Second
	ReaperPeriod = 30 * time.Second
)

// Session is one sandbox.
type Session struct {
	Physical  string
	Spec      Spec
	Handle    backend.Handle
	CreatedAt time.Time
	mountsKey string

	lock       sync.Mutex // serialises execs and process starts (§8.2)
	mu         sync.Mutex // guards the fields below
	lastUsed   time.Time
	activeExec int
	closing    bool
	procs      map[string]*Process
}

func (s *Session) touch(now time.Time) {
	s.mu.Lock()
	s.lastUsed = now
	s.mu.Unlock()
}

// Info is BoxSessionInfo (§6.4), keys in protocol order.
func (s *Session) Info(backendName string) map[string]any {
	s.mu.Lock()
	last := s.lastUsed
	s.mu.Unlock()
	var hp any
	if s.Spec.HostPath != nil {
		hp = *s.Spec.HostPath
	}
	return map[string]any{
		"session_id": s.Physical, "backend_name": backendName, "backend_session_id": s.Handle.ID,
		"image": s.Spec.Image, "network": s.Spec.Network, "host_path": hp, "host_path_mode": s.Spec.HostPathMode,
		"mount_path": s.Spec.MountPath, "persistent": s.Spec.Persistent, "cpus": pyval.Float(s.Spec.CPUs),
		"memory_mb": s.Spec.MemoryMB, "pids_limit": s.Spec.PidsLimit, "read_only_rootfs": s.Spec.ReadOnlyRootfs,
		"workspace_quota_mb": s.Spec.WorkspaceQuotaMB, "created_at": FormatTime(s.CreatedAt), "last_used_at": FormatTime(last),
	}
}

// FormatTime renders datetimes as the Python runtime does (§3.8).
func FormatTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05Z")
	}
	return t.Format("2006-01-02T15:04:05.000000Z")
}

// Observer is told about what metrics and audit care for; every method must be cheap.
type Observer interface {
	SessionCreated(backend string, d time.Duration, err error)
	Exec(status string, d time.Duration)
	Capacity(kind string)
}

type noObserver struct{}

func (noObserver) SessionCreated(string, time.Duration, error) {}
func (noObserver) Exec(string, time.Duration)                  {}
func (noObserver) Capacity(string)                             {}

// Manager owns every session of the runtime.
type Manager struct {
	// Observer receives events; set it before use (nil means none).
	Observer Observer
	// Events receives the session lifecycle (audit log); set it before use.
	Events  Events
	backend backend.Backend
	log     *slog.Logger
	now     func() time.Time
	limits  func() config.Limits

	mu        sync.Mutex
	sessions  map[string]*Session
	creating  int
	cleanups  map[string]chan struct{} // physical id -> closed when its cleanup finished
	opLocks   map[string]*opLock
	shutting  bool
	processes int // running managed processes
	starting  int // managed-process starts in progress
	completed []*Process
}

type opLock struct {
	mu   sync.Mutex
	refs int
}

// NewManager creates a manager on backend b; limits is read at every decision.
func NewManager(b backend.Backend, limits func() config.Limits, log *slog.Logger) *Manager {
	return &Manager{Observer: noObserver{}, Events: noEvents{}, backend: b, log: log, now: time.Now, limits: limits,
		sessions: map[string]*Session{}, cleanups: map[string]chan struct{}{}, opLocks: map[string]*opLock{}}
}

// BackendName is the backend's protocol name.
func (m *Manager) BackendName() string { return m.backend.Info().Name }

// lockID serialises operations on one physical id (get-or-create vs delete).
func (m *Manager) lockID(id string) func() {
	m.mu.Lock()
	l := m.opLocks[id]
	if l == nil {
		l = &opLock{}
		m.opLocks[id] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.opLocks, id)
		}
		m.mu.Unlock()
	}
}

// GetOrCreate implements §8.1. Container creation never holds the manager lock.
func (m *Manager) GetOrCreate(ctx context.Context, physical string, spec Spec) (*Session, error) {
	return m.getOrCreate(ctx, physical, spec, true)
}

// getOrCreate is GetOrCreate; probe false skips the backend liveness probe of a reused
// session (the caller's exec probes it, see backend.ExecProbesLiveness).
func (m *Manager) getOrCreate(ctx context.Context, physical string, spec Spec, probe bool) (*Session, error) {
	unlock := m.lockID(physical)
	defer unlock()
	for {
		m.mu.Lock()
		if m.shutting {
			m.mu.Unlock()
			return nil, rpc.Errorf(rpc.BoxRuntimeUnavailableError, "Box runtime is shutting down")
		}
		m.mu.Unlock()
		m.Reap(ctx)
		m.mu.Lock()
		if done, ok := m.cleanups[physical]; ok {
			m.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		s := m.sessions[physical]
		m.mu.Unlock()
		if s != nil {
			if err := compatible(s, spec); err != nil {
				return nil, err
			}
			if s.mountsKey != spec.mountsKey() {
				m.log.Info("LangBot Box session extra_mounts changed, recreating: session_id=" + physical)
				m.drop(WithDropReason(ctx, "mounts_changed"), s)
				continue
			}
			if !probe || m.backend.Alive(ctx, s.Handle) {
				s.touch(m.now())
				m.log.Info(fmt.Sprintf("LangBot Box session reused: session_id=%s backend_session_id=%s backend=%s", physical, s.Handle.ID, m.BackendName()))
				return s, nil
			}
			m.log.Warn("LangBot Box session backend disappeared, recreating: session_id=" + physical)
			m.drop(WithDropReason(ctx, "backend_gone"), s)
			continue
		}
		return m.create(ctx, physical, spec)
	}
}

func (m *Manager) create(ctx context.Context, physical string, spec Spec) (*Session, error) {
	max := m.limits().MaxSessions
	m.mu.Lock()
	if len(m.sessions)+m.creating+len(m.cleanups) >= max {
		m.mu.Unlock()
		m.Observer.Capacity("sessions")
		return nil, rpc.Errorf(rpc.BoxCapacityExceededError, "Box session capacity reached (%d)", max)
	}
	m.creating++
	m.mu.Unlock()
	started := time.Now()
	h, err := m.backend.Start(ctx, toBackendSpec(physical, spec))
	m.Observer.SessionCreated(m.BackendName(), time.Since(started), err)
	m.mu.Lock()
	m.creating--
	if err != nil {
		m.mu.Unlock()
		m.Events.SessionCreated(ctx, physical, spec, "", backendError(err))
		return nil, backendError(err)
	}
	now := m.now()
	s := &Session{Physical: physical, Spec: spec, Handle: h, CreatedAt: now, lastUsed: now, mountsKey: spec.mountsKey(), procs: map[string]*Process{}}
	if m.shutting {
		m.mu.Unlock()
		_ = m.backend.Stop(context.WithoutCancel(ctx), h)
		return nil, rpc.Errorf(rpc.BoxRuntimeUnavailableError, "Box runtime is shutting down")
	}
	m.sessions[physical] = s
	m.mu.Unlock()
	m.Events.SessionCreated(ctx, physical, spec, h.ID, nil)
	hp := "None"
	if spec.HostPath != nil {
		hp = *spec.HostPath
	}
	m.log.Info(fmt.Sprintf("LangBot Box session created: session_id=%s backend_session_id=%s backend=%s image=%s network=%s host_path=%s host_path_mode=%s mount_path=%s workspace_quota_mb=%d",
		physical, h.ID, m.BackendName(), spec.Image, spec.Network, hp, spec.HostPathMode, spec.MountPath, spec.WorkspaceQuotaMB))
	return s, nil
}

// Known reports whether a sandbox (by backend handle id) is in the session table, or being
// cleaned up: a recovery pass run while boxd serves leaves those alone.
func (m *Manager) Known(handleID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		if s.Handle.ID == handleID {
			return true
		}
	}
	return false
}

// AdoptRecovered registers the persistent sandboxes a recovery pass found while boxd serves
// (the engine came back). A sandbox whose physical id has a session already (created while
// the engine was away, or a second container of one session) is removed instead: the table
// keeps one sandbox per id.
func (m *Manager) AdoptRecovered(ctx context.Context, adopted []backend.Adopted) {
	for _, a := range adopted {
		if !m.adopt(a.Spec, a.Handle, a.Created) {
			m.log.Info(fmt.Sprintf("Cleaning up orphaned Box container: %s (session %s exists)", a.Handle.ID, a.Spec.PhysicalID))
			if err := m.backend.Stop(ctx, a.Handle); err != nil {
				m.log.Warn(fmt.Sprintf("Failed to remove orphaned box container %s: %v", a.Handle.ID, err))
			}
			continue
		}
		m.log.Info(fmt.Sprintf("LangBot Box persistent session re-adopted: session_id=%s backend_session_id=%s", a.Spec.PhysicalID, a.Handle.ID))
	}
}

// Adopt registers a persistent sandbox that survived a restart of boxd.
func (m *Manager) Adopt(bs backend.SessionSpec, h backend.Handle, created time.Time) {
	m.adopt(bs, h, created)
}

// adopt is Adopt; it reports false, changing nothing, when the physical id has a session
// (or one being cleaned up) already.
func (m *Manager) adopt(bs backend.SessionSpec, h backend.Handle, created time.Time) bool {
	spec := Spec{Image: bs.Image, Network: "off", HostPathMode: string(bs.HostPathMode), MountPath: bs.MountPath,
		ExtraMounts: bs.ExtraMounts, Persistent: bs.Persistent, CPUs: bs.CPUs, MemoryMB: bs.MemoryMB,
		PidsLimit: bs.PidsLimit, ReadOnlyRootfs: bs.ReadOnlyRootfs, WorkspaceQuotaMB: bs.WorkspaceQuotaMB}
	if bs.NetworkOn {
		spec.Network = "on"
	}
	if bs.HostPath != "" {
		hp := bs.HostPath
		spec.HostPath = &hp
	}
	if spec.HostPathMode == "" {
		spec.HostPathMode = "rw"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, taken := m.sessions[bs.PhysicalID]
	_, closing := m.cleanups[bs.PhysicalID]
	if taken || closing {
		return false
	}
	m.sessions[bs.PhysicalID] = &Session{Physical: bs.PhysicalID, Spec: spec, Handle: h, CreatedAt: created, lastUsed: m.now(), mountsKey: spec.mountsKey(), procs: map[string]*Process{}}
	return true
}

// Release forgets persistent sessions without removing their sandboxes, so a restarted boxd
// re-adopts them; every other session is dropped. Used on SIGTERM/SIGINT.
func (m *Manager) Release(ctx context.Context) {
	m.mu.Lock()
	m.shutting = true
	var drop []*Session
	for id, s := range m.sessions {
		if s.Spec.Persistent {
			delete(m.sessions, id)
			continue
		}
		drop = append(drop, s)
	}
	m.mu.Unlock()
	for _, s := range drop {
		m.drop(WithDropReason(ctx, "shutdown"), s)
	}
}

func backendError(err error) error {
	if e, ok := err.(*backend.ValidationError); ok {
		return rpc.Errorf(rpc.BoxValidationError, "%s", e.Message)
	}
	if e, ok := err.(*rpc.Error); ok {
		return e
	}
	return rpc.Errorf(rpc.BoxError, "%s", err.Error())
}

func toBackendSpec(physical string, s Spec) backend.SessionSpec {
	bs := backend.SessionSpec{PhysicalID: physical, Image: s.Image, NetworkOn: s.Network == "on", MountPath: s.MountPath,
		Persistent: s.Persistent, CPUs: s.CPUs, WorkspaceQuotaMB: s.WorkspaceQuotaMB, MemoryMB: s.MemoryMB, PidsLimit: s.PidsLimit, ReadOnlyRootfs: s.ReadOnlyRootfs,
		HostPathMode: backend.MountMode(s.HostPathMode)}
	if s.HostPath != nil {
		bs.HostPath = *s.HostPath
	}
	for _, em := range s.ExtraMounts {
		if em.Mode != backend.MountNone {
			bs.ExtraMounts = append(bs.ExtraMounts, em)
		}
	}
	return bs
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// compatible compares the fields of §8.1 in order.
func compatible(s *Session, n Spec) error {
	o := s.Spec
	hp := func(p *string) string {
		if p == nil {
			return "None"
		}
		return *p
	}
	checks := []struct {
		field    string
		same     bool
		existing string
	}{
		{"network", o.Network == n.Network, o.Network},
		{"image", o.Image == n.Image, o.Image},
		{"host_path", hp(o.HostPath) == hp(n.HostPath), hp(o.HostPath)},
		{"host_path_mode", o.HostPathMode == n.HostPathMode, o.HostPathMode},
		{"mount_path", o.MountPath == n.MountPath, o.MountPath},
		{"persistent", o.Persistent == n.Persistent, pyBool(o.Persistent)},
		{"cpus", o.CPUs == n.CPUs, pyval.FloatRepr(o.CPUs)},
		{"memory_mb", o.MemoryMB == n.MemoryMB, fmt.Sprint(o.MemoryMB)},
		{"pids_limit", o.PidsLimit == n.PidsLimit, fmt.Sprint(o.PidsLimit)},
		{"read_only_rootfs", o.ReadOnlyRootfs == n.ReadOnlyRootfs, pyBool(o.ReadOnlyRootfs)},
		{"workspace_quota_mb", o.WorkspaceQuotaMB == n.WorkspaceQuotaMB, fmt.Sprint(o.WorkspaceQuotaMB)},
	}
	for _, c := range checks {
		if !c.same {
			return rpc.Errorf(rpc.BoxSessionConflictError, "Box session %s already exists with %s=%s", s.Physical, c.field, c.existing)
		}
	}
	return nil
}

// Get returns a session or BoxSessionNotFoundError.
func (m *Manager) Get(physical string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sessions[physical]; ok {
		return s, nil
	}
	return nil, rpc.Errorf(rpc.BoxSessionNotFoundError, "session %s not found", physical)
}

// List returns the sessions whose physical id starts with prefix, sorted by id.
func (m *Manager) List(prefix string) []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Session
	for id, s := range m.sessions {
		if strings.HasPrefix(id, prefix) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Physical < out[j].Physical })
	return out
}

// Counts for /healthz.
func (m *Manager) Counts() (sessions, running, completed, creating, closing int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions), m.processes, len(m.completed), m.creating, len(m.cleanups)
}

// Delete implements box_delete_session (§5.9).
func (m *Manager) Delete(ctx context.Context, physical string) error {
	unlock := m.lockID(physical)
	defer unlock()
	m.mu.Lock()
	s := m.sessions[physical]
	done, closing := m.cleanups[physical]
	m.mu.Unlock()
	if s == nil {
		if closing {
			<-done
			return nil
		}
		return rpc.Errorf(rpc.BoxSessionNotFoundError, "session %s not found", physical)
	}
	m.drop(ctx, s)
	return nil
}

// drop removes s from the table at once and cleans it up (§8.6), returning when done.
func (m *Manager) drop(ctx context.Context, s *Session) {
	m.mu.Lock()
	if m.sessions[s.Physical] != s {
		done := m.cleanups[s.Physical]
		m.mu.Unlock()
		if done != nil {
			<-done
		}
		return
	}
	delete(m.sessions, s.Physical)
	done := make(chan struct{})
	m.cleanups[s.Physical] = done
	m.mu.Unlock()
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	m.Events.SessionDropped(ctx, s.Physical, s.Handle.ID, DropReason(ctx))

	cctx := context.WithoutCancel(ctx)
	s.lock.Lock()
	m.log.Info(fmt.Sprintf("LangBot Box session cleanup: session_id=%s backend_session_id=%s backend=%s", s.Physical, s.Handle.ID, m.BackendName()))
	s.mu.Lock()
	procs := s.procs
	s.procs = map[string]*Process{}
	s.mu.Unlock()
	for _, p := range procs {
		m.terminate(cctx, p)
	}
	if err := m.backend.Stop(cctx, s.Handle); err != nil {
		m.log.Warn(fmt.Sprintf("Failed to clean up box session %s: %v", s.Physical, err))
	}
	s.lock.Unlock()

	m.mu.Lock()
	delete(m.cleanups, s.Physical)
	m.mu.Unlock()
	close(done)
}

// Reap drops idle sessions (§8.4) and expired completed processes.
func (m *Manager) Reap(ctx context.Context) {
	now := m.now()
	var idle []*Session
	m.mu.Lock()
	for _, s := range m.sessions {
		s.mu.Lock()
		running := 0
		for _, p := range s.procs {
			if p.running() {
				running++
			}
		}
		if !s.Spec.Persistent && s.activeExec == 0 && running == 0 && now.Sub(s.lastUsed) > TTL {
			idle = append(idle, s)
		}
		s.mu.Unlock()
	}
	m.mu.Unlock()
	for _, s := range idle {
		m.drop(WithDropReason(ctx, "ttl"), s)
	}
	m.reapCompleted(now)
}

// RunReaper reaps every period until ctx ends; each tick also runs the other housekeeping
// given (the reference's reaper expires admission grants in the same pass, §8.1 step 2).
func (m *Manager) RunReaper(ctx context.Context, period time.Duration, also ...func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Reap(ctx)
			for _, f := range also {
				f(ctx)
			}
		}
	}
}

// Shutdown drops every session (box_shutdown and process exit). With stopAccepting the
// manager refuses new sessions afterwards.
func (m *Manager) Shutdown(ctx context.Context, stopAccepting bool) {
	m.mu.Lock()
	if stopAccepting {
		m.shutting = true
	}
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.drop(WithDropReason(ctx, "shutdown"), s)
		}()
	}
	wg.Wait()
}

// Package server is boxd's HTTP surface (§2): /healthz, /readyz, /rpc/ws, the managed-process
// relays, and the RPC dispatcher with its action classes, context gate and generation fence.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/audit"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/metrics"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// Header names of §2.2 / §2.6.
const (
	HeaderToken      = "X-LangBot-Box-Control-Token"
	HeaderInstance   = "X-LangBot-Instance-Id"
	HeaderWorkspace  = "X-LangBot-Workspace-Id"
	HeaderGeneration = "X-LangBot-Placement-Generation"
	maxMessage       = 16 << 20
)

var instancePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Configurable is implemented by backends that take box_init settings.
type Configurable interface {
	Configure(cpuLimit, hardening bool)
}

// Options wire a server.
type Options struct {
	Token           string // validated LANGBOT_BOX_CONTROL_TOKEN ("" = none)
	TrustedInstance string // LANGBOT_BOX_TRUSTED_INSTANCE_UUID ("" = pin on first /rpc/ws)
	Backend         backend.Backend
	Manager         *session.Manager
	Config          config.Config
	Cwd             string
	Logger          *slog.Logger
	Metrics         *metrics.Metrics
	// CgroupV2 reports whether the backend's daemon runs on cgroup v2 (grant-enforced
	// readiness); nil = unknown (reported false).
	CgroupV2 func(ctx context.Context) (bool, error)
	// UnsafeSoftStorageLimits is LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS.
	UnsafeSoftStorageLimits bool
	// Audit receives one record per state-changing action; nil = no audit log.
	Audit *audit.Logger
	// Conn bounds WebSocket connections; zero fields take DefaultConnLimits.
	Conn ConnLimits
}

// Server holds the runtime state shared by connections.
type Server struct {
	opts     Options
	log      *slog.Logger
	mgr      *session.Manager
	backend  backend.Backend
	fence    *tenancy.Fence
	adm      *admission.Controller
	audit    *audit.Logger
	actions  map[string]action
	upgrader websocket.Upgrader
	skills   skillService
	// connLimits are opts.Conn with defaults filled in.
	connLimits ConnLimits
	// inbound is the -ws-max-inbound-bytes budget of every WebSocket connection.
	inbound *inboundBudget

	mu          sync.Mutex
	trusted     string
	cfg         config.Config
	readyAt     time.Time
	ready       bool
	conns       map[*websocket.Conn]struct{}
	openConns   int  // WebSocket connections holding a -max-connections slot
	selected    bool // a backend is selected (docker is the only one boxd has)
	selectedMsg string
}

// New builds a server; call Handler to serve it.
func New(opts Options) *Server {
	s := &Server{opts: opts, log: opts.Logger, mgr: opts.Manager, backend: opts.Backend,
		fence: tenancy.NewFence(opts.Config.Limits.MaxAdmissionRecords), trusted: opts.TrustedInstance,
		cfg: opts.Config, conns: map[*websocket.Conn]struct{}{}}
	s.upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, EnableCompression: false}
	s.connLimits = opts.Conn.WithDefaults()
	s.inbound = &inboundBudget{max: s.connLimits.MaxInboundBytes}
	s.adm = s.newAdmission()
	s.audit = opts.Audit
	s.actions = s.registry()
	return s
}

// Config returns the effective configuration.
func (s *Server) Config() config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Limits returns the effective limits (the manager reads them through this).
func (s *Server) Limits() config.Limits { return s.Config().Limits }

// Handler is the single listener's router.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.opts.Metrics.Handler())
	mux.HandleFunc("GET /rpc/ws", s.rpcWS)
	mux.HandleFunc("GET /v1/sessions/{session}/managed-process/{process}/ws", s.relay)
	mux.HandleFunc("GET /v1/sessions/{session}/managed-process/ws", s.relay)
	return mux
}

// authenticate implements §2.2; bind pins the instance on first use (/rpc/ws only).
func (s *Server) authenticate(r *http.Request, bind bool) (string, bool) {
	if s.opts.Token != "" {
		got := r.Header.Get(HeaderToken)
		if subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) != 1 {
			return "", false
		}
	}
	inst := strings.TrimSpace(r.Header.Get(HeaderInstance))
	if !instancePattern.MatchString(inst) {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trusted == "" {
		if !bind {
			return "", false
		}
		s.trusted = inst
		return inst, true
	}
	return inst, subtle.ConstantTimeCompare([]byte(inst), []byte(s.trusted)) == 1
}

// TrustedInstance is the pinned LangBot instance ("" until the first /rpc/ws).
func (s *Server) TrustedInstance() string { return s.trustedInstance() }

// Admission is the grant-enforced mode controller (its reaper runs in the runtime).
func (s *Server) Admission() *admission.Controller { return s.adm }

func (s *Server) trustedInstance() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trusted
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte("Unauthorized"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) resources() map[string]any {
	sessions, running, completed, creating, closing := s.mgr.Counts()
	return map[string]any{
		"event_loop":        map[string]any{"running": true, "samples_total": 0, "last_lag_ms": 0.0, "recent_p95_lag_ms": 0.0, "recent_max_lag_ms": 0.0, "max_lag_ms": 0.0},
		"blocking_executor": map[string]any{},
		"sessions":          sessions, "managed_processes": running, "completed_processes": completed,
		"creating_session_tasks": creating, "closing_session_tasks": closing, "background_tasks": 0,
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"live": true, "resources": s.resources()})
}

// backendInfo probes the backend, cached for admission.readiness_cache_sec (15 s by
// default; the reference uses it in standard mode too, §2.4).
func (s *Server) backendInfo(ctx context.Context) map[string]any {
	if s.adm.Required() {
		return s.grantBackendInfo(ctx)
	}
	s.mu.Lock()
	policy, _ := s.adm.Policy()
	fresh := time.Since(s.readyAt) < time.Duration(policy.ReadinessCacheSec)*time.Second
	ready := s.ready
	s.mu.Unlock()
	if !fresh {
		ready = s.selectBackend(ctx)
		s.mu.Lock()
		s.ready, s.readyAt = ready, time.Now()
		s.mu.Unlock()
	}
	if !ready {
		return map[string]any{"name": nil, "available": false}
	}
	return map[string]any{"name": s.backend.Info().Name, "available": true}
}

// selectBackend applies §7.3 for the one backend boxd has (docker) and logs the choice once.
func (s *Server) selectBackend(ctx context.Context) bool {
	want := s.Config().Backend
	name := s.backend.Info().Name // the one backend this boxd was started with ("local" = docker, nsjail)
	if want != "" && want != name && (want != "local" || name != "docker") {
		s.log.Error(fmt.Sprintf("LangBot Box backend %q not found (box.backend=%s, available: [%s])", want, want, name))
		return false
	}
	if err := s.backend.Available(ctx); err != nil {
		if want == "" {
			s.log.Warn("LangBot Box backend unavailable: no supported backend (Docker, nsjail, E2B) is ready")
		} else {
			s.log.Error(fmt.Sprintf("LangBot Box backend %q probed but not available (box.backend=%s)", want, want))
		}
		s.mu.Lock()
		s.selected = false
		s.mu.Unlock()
		return false
	}
	msg := "LangBot Box using backend: " + name
	if want != "" {
		msg += " (forced via box.backend=" + want + ")"
	}
	s.mu.Lock()
	log := !s.selected || s.selectedMsg != msg
	s.selected, s.selectedMsg = true, msg
	s.mu.Unlock()
	if log {
		s.log.Info(msg)
	}
	return true
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.adm.Required() {
		rd := s.adm.Readiness(r.Context())
		body := rd.Map()
		body["resources"] = s.resources()
		code := http.StatusOK
		if !rd.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
		return
	}
	info := s.backendInfo(r.Context())
	ready := info["available"] == true
	body := map[string]any{"ready": ready, "mode": "standard", "backend": info,
		"checks": map[string]any{"backend_available": ready}, "resources": s.resources()}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// CloseAll closes every live WebSocket with 1001 (process shutdown, §1.4).
func (s *Server) CloseAll() {
	s.mu.Lock()
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "Box runtime shutting down")
	for _, c := range conns {
		_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = c.Close()
	}
}

func (s *Server) track(c *websocket.Conn) func() {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

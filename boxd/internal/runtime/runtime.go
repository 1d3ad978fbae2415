// Package runtime assembles boxd: it validates the environment, builds the Docker backend,
// the session manager and the server, recovers sandboxes of a previous run, and serves.
package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/audit"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/metrics"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/server"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
)

// Options are the command line and environment of boxd.
type Options struct {
	Host            string
	Port            int
	Stdio           bool
	Token           string // LANGBOT_BOX_CONTROL_TOKEN
	TrustedInstance string // LANGBOT_BOX_TRUSTED_INSTANCE_UUID
	ConfigJSON      string // LANGBOT_BOX_CONFIG
	// Scope (BOXD_SCOPE, boxd only) confines start-up recovery to containers of the same
	// scope so several runtimes can share one Docker Engine; empty = 0.5.5 behaviour.
	Scope string
	// NodeName (BOXD_NODE_NAME) is the node boxd runs on: the kubernetes backend pins
	// sandboxes to it with box_root.pin_to_node.
	NodeName string
	Stdin    io.Reader
	Stdout   io.Writer
	// Stderr is where the audit log goes by default in stdio mode (stdout carries the
	// protocol there); nil = no audit log in that case.
	Stderr io.Writer
	// AuditLog is a file the audit log is appended to (created 0600). Empty: the audit log
	// goes to Stdout, or to Stderr in stdio mode; with neither set there is none.
	AuditLog string
	// UnsafeSoftStorageLimits is LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS (grant-enforced
	// readiness only).
	UnsafeSoftStorageLimits bool
	Logger                  *slog.Logger
	// Conn bounds WebSocket connections (the -max-connections and -ws-* flags); zero fields
	// take server.DefaultConnLimits.
	Conn server.ConnLimits
	// Ready, when set, receives the listener address once boxd serves.
	Ready func(addr string)
}

var instancePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Validate checks the environment as §1.2 requires, before anything listens.
func (o *Options) Validate() error {
	o.Token = strings.TrimSpace(o.Token)
	if o.Token != "" && (len(o.Token) < 32 || strings.ContainsAny(o.Token, " \t\r\n\v\f")) {
		return errors.New("LANGBOT_BOX_CONTROL_TOKEN must be a non-whitespace secret of at least 32 characters")
	}
	o.TrustedInstance = strings.TrimSpace(o.TrustedInstance)
	if o.TrustedInstance != "" && !instancePattern.MatchString(o.TrustedInstance) {
		return errors.New("LANGBOT_BOX_TRUSTED_INSTANCE_UUID is not a valid instance id")
	}
	if o.Stdio && o.TrustedInstance == "" {
		return errors.New("LANGBOT_BOX_TRUSTED_INSTANCE_UUID is required for stdio Box control")
	}
	return nil
}

// Run serves until ctx is cancelled (or stdin ends in stdio mode), then shuts down.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log := o.Logger
	var id [6]byte
	_, _ = rand.Read(id[:])
	instanceID := hex.EncodeToString(id[:])

	cfg := config.Default()
	if o.ConfigJSON != "" {
		var payload map[string]any
		dec := json.NewDecoder(bytes.NewReader([]byte(o.ConfigJSON)))
		dec.UseNumber()
		if err := dec.Decode(&payload); err != nil {
			log.Warn(fmt.Sprintf("Failed to parse LANGBOT_BOX_CONFIG: %.100s", o.ConfigJSON))
		} else {
			next, err := cfg.Apply(payload, server.Cwd())
			if err != nil {
				return fmt.Errorf("LANGBOT_BOX_CONFIG: %w", err)
			}
			shareBoxRoot(next, log)
			if err := next.EnsureDefaultWorkspace(); err != nil {
				return fmt.Errorf("LANGBOT_BOX_CONFIG: %w", err)
			}
			cfg = next
		}
	}
	var srv *server.Server
	auditW, closeAudit, err := auditDestination(o)
	if err != nil {
		return err
	}
	defer closeAudit()
	var aud *audit.Logger
	if auditW != nil {
		aud = audit.New(auditW, func() string { return srv.TrustedInstance() }, cfg.Limits.MaxAdmissionRecords)
	}
	if o.UnsafeSoftStorageLimits {
		log.Warn("LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS is enabled: storage-quota readiness checks pass without hard quotas (only with the required nsjail backend, which boxd does not have)")
	}
	be, cgroupV2, err := newBackend(cfg, instanceID, o.Scope, o.NodeName, log, func() config.Config { return srv.Config() }, func() (*docker.Backend, error) {
		return docker.New(ctx, docker.Options{InstanceID: instanceID, Scope: o.Scope, CPULimitEnabled: cfg.CPULimitEnabled, Hardening: cfg.Hardening,
			AllowedMountRoots: func() []string { return srv.Config().Paths.AllowedMountRoots }, Logger: log,
			ExecAgent: func() bool { return srv.Config().ExecAgent }, HostRoot: func() string { return srv.Config().Paths.HostRoot },
			SandboxUser: func() string { return srv.Config().SandboxUser },
			AgentBinary: docker.DefaultAgentBinary()})
	})
	if err != nil {
		return err
	}
	var mgr *session.Manager
	mgr = session.NewManager(be, func() config.Limits { return srv.Limits() }, log)
	met := metrics.New(metrics.Gauges{Backend: be.Info().Name,
		Sessions:       func() float64 { n, _, _, _, _ := mgr.Counts(); return float64(n) },
		ManagedRunning: func() float64 { _, n, _, _, _ := mgr.Counts(); return float64(n) },
		ManagedExited:  func() float64 { _, _, n, _, _ := mgr.Counts(); return float64(n) },
		InboundBytes:   func() float64 { return float64(srv.InboundBytes()) },
	})
	mgr.Observer = met
	if err := met.RegisterFrom(be); err != nil {
		return err
	}
	if aud != nil {
		mgr.Events = aud.SessionEvents()
	}
	srv = server.New(server.Options{Token: o.Token, TrustedInstance: o.TrustedInstance, Backend: be, Manager: mgr,
		Config: cfg, Cwd: server.Cwd(), Logger: log, Metrics: met, Audit: aud,
		CgroupV2: cgroupV2, UnsafeSoftStorageLimits: o.UnsafeSoftStorageLimits, Conn: o.Conn})

	engineUp := be.Available(ctx) == nil
	if engineUp {
		log.Info("LangBot Box using backend: " + be.Info().Name)
		adopted, removed, err := be.Recover(ctx, instanceID)
		if err != nil {
			log.Warn("LangBot Box orphan container cleanup failed: " + err.Error())
		}
		for _, a := range adopted {
			mgr.Adopt(a.Spec, a.Handle, a.Created)
			log.Info(fmt.Sprintf("LangBot Box persistent session re-adopted: session_id=%s backend_session_id=%s", a.Spec.PhysicalID, a.Handle.ID))
		}
		met.OrphansRemoved(removed)
		if removed > 0 {
			log.Info(fmt.Sprintf("LangBot Box removed %d orphaned container(s)", removed))
		}
	} else {
		log.Warn("LangBot Box backend unavailable: no supported backend (Docker, nsjail, E2B) is ready")
	}
	reapCtx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReaper()
	go mgr.RunReaper(reapCtx, session.ReaperPeriod, srv.Admission().Reap)
	go watchEngine(reapCtx, be, engineUp, mgr, met, log)
	if r, ok := be.(interface{ Run(context.Context) }); ok {
		go r.Run(reapCtx) // background work of the backend (the kubernetes warm pool)
	}

	addr := net.JoinHostPort(o.Host, fmt.Sprint(o.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error(fmt.Sprintf("Box server failed to bind %s: %v", addr, err))
		if !o.Stdio {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		log.Error("Managed process WebSocket attach will be unavailable.")
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if ln != nil {
		go func() { _ = httpSrv.Serve(ln) }()
		log.Info("Box server listening on " + ln.Addr().String())
		log.Info(fmt.Sprintf("Box action RPC available at ws://%s/rpc/ws", ln.Addr().String()))
		if o.Ready != nil {
			o.Ready(ln.Addr().String())
		}
	}
	if o.Stdio {
		serveStdio(ctx, srv, o.Stdin, o.Stdout, log)
	} else {
		<-ctx.Done()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv.CloseAll()
	_ = httpSrv.Shutdown(shutdownCtx)
	mgr.Release(shutdownCtx)
	log.Info("Box runtime stopped")
	return nil
}

// auditDestination picks where the audit log goes: the --audit-log file (append, 0600), else
// stdout, except in stdio mode where stdout carries the protocol and stderr is used. A nil
// writer means no audit log.
func auditDestination(o Options) (io.Writer, func(), error) {
	if o.AuditLog != "" {
		f, err := audit.OpenFile(o.AuditLog)
		if err != nil {
			return nil, nil, err
		}
		return f, func() { _ = f.Close() }, nil
	}
	if o.Stdio {
		return o.Stderr, func() {}, nil
	}
	return o.Stdout, func() {}, nil
}

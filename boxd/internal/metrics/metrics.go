// Package metrics exposes boxd's Prometheus metrics on its own registry (no global state).
package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are boxd's instruments. The zero value is not usable: call New.
type Metrics struct {
	registry           *prometheus.Registry
	sessionCreations   *prometheus.HistogramVec
	execs              *prometheus.HistogramVec
	rpcRequests        *prometheus.CounterVec
	capacityRejections *prometheus.CounterVec
	orphansRemoved     prometheus.Counter
	relayBytes         *prometheus.CounterVec
	connRefused        *prometheus.CounterVec
	disconnects        *prometheus.CounterVec
}

// Gauges are read at scrape time from the runtime's state.
type Gauges struct {
	Sessions       func() float64
	ManagedRunning func() float64
	ManagedExited  func() float64
	// InboundBytes is what incoming WebSocket messages being assembled hold (the
	// -ws-max-inbound-bytes budget in use).
	InboundBytes func() float64
	Backend      string
}

// New registers every metric.
func New(g Gauges) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		registry: r,
		sessionCreations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "boxd_session_creations_seconds",
			Help: "Time to create a sandbox session, by backend and result.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 10)}, []string{"backend", "result"}),
		execs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "boxd_execs_seconds",
			Help: "box_exec wall time, by status (completed, timed_out, error).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"status"}),
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_rpc_requests_total",
			Help: "RPC requests by action and error class (\"\" on success)."}, []string{"action", "error_class"}),
		capacityRejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_capacity_rejections_total",
			Help: "Requests refused with BoxCapacityExceededError, by kind."}, []string{"kind"}),
		orphansRemoved: prometheus.NewCounter(prometheus.CounterOpts{Name: "boxd_orphan_containers_removed_total",
			Help: "Containers of previous runtime instances removed at start-up."}),
		relayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_relay_bytes_total",
			Help: "Bytes relayed between managed processes and relay clients, by direction (in = to stdin)."}, []string{"direction"}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_ws_connections_refused_total",
			Help: "WebSocket connections refused with HTTP 503 because -max-connections were open, by endpoint (rpc, relay)."}, []string{"endpoint"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_ws_disconnects_total",
			Help: "WebSocket connections boxd closed on a bound, by reason (message_timeout, message_too_big, pong_timeout, write_timeout, outbound_limit, inbound_budget)."}, []string{"reason"}),
	}
	r.MustRegister(m.sessionCreations, m.execs, m.rpcRequests, m.capacityRejections, m.orphansRemoved, m.relayBytes, m.connRefused, m.disconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "boxd_sessions", Help: "Live sessions.", ConstLabels: prometheus.Labels{"backend": g.Backend}}, g.Sessions),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "boxd_managed_processes", Help: "Managed processes by status.", ConstLabels: prometheus.Labels{"status": "running"}}, g.ManagedRunning),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "boxd_managed_processes", Help: "Managed processes by status.", ConstLabels: prometheus.Labels{"status": "exited"}}, g.ManagedExited),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "boxd_ws_inbound_bytes",
			Help: "Bytes held by incoming WebSocket messages being assembled, all connections together (bounded by -ws-max-inbound-bytes)."}, g.InboundBytes),
	)
	return m
}

// Source is implemented by a component with metrics of its own (the kubernetes backend's
// warm pool); Collectors may return nil.
type Source interface {
	Collectors() []prometheus.Collector
}

// RegisterFrom registers the collectors of v when it is a Source (nothing otherwise).
func (m *Metrics) RegisterFrom(v any) error {
	src, ok := v.(Source)
	if !ok {
		return nil
	}
	for _, c := range src.Collectors() {
		if err := m.registry.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// Handler serves the text exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// SessionCreated records one creation attempt.
func (m *Metrics) SessionCreated(backend string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.sessionCreations.WithLabelValues(backend, result).Observe(d.Seconds())
}

// Exec records one box_exec.
func (m *Metrics) Exec(status string, d time.Duration) {
	m.execs.WithLabelValues(status).Observe(d.Seconds())
}

// RPC records one request.
func (m *Metrics) RPC(action, errorClass string) {
	m.rpcRequests.WithLabelValues(action, errorClass).Inc()
}

// Capacity records a capacity rejection ("sessions" or "managed_processes").
func (m *Metrics) Capacity(kind string) { m.capacityRejections.WithLabelValues(kind).Inc() }

// OrphansRemoved adds n removed orphans.
func (m *Metrics) OrphansRemoved(n int) { m.orphansRemoved.Add(float64(n)) }

// Relay adds relayed bytes ("in" to stdin, "out" from stdout).
func (m *Metrics) Relay(direction string, n int) {
	m.relayBytes.WithLabelValues(direction).Add(float64(n))
}

// ConnRefused counts a WebSocket refused at the connection cap ("rpc" or "relay").
func (m *Metrics) ConnRefused(endpoint string) { m.connRefused.WithLabelValues(endpoint).Inc() }

// Disconnected counts a WebSocket boxd closed on one of its bounds.
func (m *Metrics) Disconnected(reason string) { m.disconnects.WithLabelValues(reason).Inc() }

// Package metrics defines membershipd's Prometheus metrics on a registry of
// its own (never the global one, so tests can run many servers in one
// process). Label values are fixed strings chosen by the code, never user
// input, so cardinality stays bounded.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/unibus/unibus/wire"
)

// Metrics is the set of membershipd's metrics.
type Metrics struct {
	Registry *prometheus.Registry
	// Requests counts control-plane requests by route pattern and status code.
	Requests *prometheus.CounterVec
	// Denials counts denied control-plane requests by reason.
	Denials *prometheus.CounterVec
	// Replays counts requests refused because their nonce was already used.
	Replays prometheus.Counter
	// Kicked counts data-plane connections closed after a status change
	// (revocation).
	Kicked prometheus.Counter
	// AuditEntries counts entries this process appended to the audit log.
	AuditEntries prometheus.Counter
	// StoreLatency observes store operations by operation name.
	StoreLatency *prometheus.HistogramVec
	// BusAuth counts data-plane logins by result (allow/deny) and reason.
	BusAuth *prometheus.CounterVec
	// Relay counts members' messages by the relay's verdict: ok, or why
	// it refused one.
	Relay *prometheus.CounterVec
	// Healthy is 1 while /healthz would answer ok, else 0.
	Healthy prometheus.Gauge
	// Degraded is 1 for the reason the node is not ok (wire.HealthReasons),
	// 0 for the others.
	Degraded *prometheus.GaugeVec
	// DiskFree is the least free space over the state's file systems.
	DiskFree prometheus.Gauge
}

// New creates the metrics on a fresh registry, with the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unibus_http_requests_total", Help: "Control-plane requests by route and status code.",
		}, []string{"route", "code"}),
		Denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unibus_http_denials_total", Help: "Denied control-plane requests by reason.",
		}, []string{"reason"}),
		Replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "unibus_http_replays_total", Help: "Signed requests refused because their nonce was already used.",
		}),
		Kicked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "unibus_bus_connections_kicked_total", Help: "Data-plane connections closed after a status change (revocation).",
		}),
		AuditEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "unibus_audit_entries_total", Help: "Entries this process appended to the audit log.",
		}),
		StoreLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "unibus_store_op_seconds", Help: "Store operation latency.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"op"}),
		BusAuth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unibus_bus_auth_total", Help: "Data-plane logins by result and reason.",
		}, []string{"result", "reason"}),
		Relay: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "unibus_relay_messages_total", Help: "Members' messages by the relay's verdict (ok, or the refusal's reason).",
		}, []string{"result"}),
	}
	m.Healthy = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "unibus_healthy", Help: "1 while /healthz answers ok, else 0 (refreshed every few seconds).",
	})
	m.Degraded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "unibus_degraded", Help: "1 for the reason the node is not ok (as /healthz's reason), 0 for the others.",
	}, []string{"reason"})
	for _, reason := range wire.HealthReasons {
		m.Degraded.WithLabelValues(reason)
	}
	m.DiskFree = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "unibus_disk_free_bytes", Help: "Least free space over the file systems that hold the node's state (-1: unknown).",
	})
	r.MustRegister(m.Requests, m.Denials, m.Replays, m.Kicked, m.AuditEntries, m.StoreLatency, m.BusAuth, m.Relay,
		m.Healthy, m.Degraded, m.DiskFree,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// OnBusAuth records one data-plane login decision; it fits natsnode's hook.
func (m *Metrics) OnBusAuth(reason string, allowed bool) {
	result := "deny"
	if allowed {
		result = "allow"
	}
	m.BusAuth.WithLabelValues(result, reason).Inc()
}

// SetHealth records the node's health: reason is "" when ok, else one of
// wire.HealthReasons.
func (m *Metrics) SetHealth(reason string) {
	if reason == "" {
		m.Healthy.Set(1)
	} else {
		m.Healthy.Set(0)
	}
	for _, r := range wire.HealthReasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		m.Degraded.WithLabelValues(r).Set(v)
	}
}

// OnRelay records one relayed message's verdict; it fits the relay's hook.
func (m *Metrics) OnRelay(result string) { m.Relay.WithLabelValues(result).Inc() }

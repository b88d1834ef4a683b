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
	r.MustRegister(m.Requests, m.Denials, m.Replays, m.Kicked, m.AuditEntries, m.StoreLatency, m.BusAuth, m.Relay,
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

// OnRelay records one relayed message's verdict; it fits the relay's hook.
func (m *Metrics) OnRelay(result string) { m.Relay.WithLabelValues(result).Inc() }

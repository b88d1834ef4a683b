package natsnode

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Bus-auth modes.
const (
	// BusAuthEnforce requires every client to log in with its nkey and
	// grants it the per-subject ACL of its rooms. The default.
	BusAuthEnforce = "enforce"
	// BusAuthOff accepts any client with full permissions. Only allowed
	// when the listener binds a loopback address.
	BusAuthOff = "off"
)

// Options configure a Node. The zero value of every field is the secure
// default; insecure choices are explicit fields with loud names.
type Options struct {
	Host string // client listener address; must be loopback unless TLS is set
	Port int    // client listener port; -1 picks a random free port

	ServerName string // unique node name (nats-server server_name)
	StoreDir   string // JetStream store directory (required)

	BusAuth string      // BusAuthEnforce (default when empty) or BusAuthOff
	TLS     *tls.Config // nil = plaintext; when set, TLS is required on the client listener

	// JetStream fsync policy. The default (SyncAlways false, SyncInterval
	// 0) and SyncAlways true both fsync before every acknowledgement
	// (docs/DESIGN.md). A positive SyncInterval without SyncAlways flushes on that
	// interval instead, trading durability on power loss for throughput.
	SyncAlways   bool
	SyncInterval time.Duration

	// InternalNKey is the public user nkey ("U…") of membershipd's internal
	// identity: the only user granted full permissions, and the only one
	// that can log in to ControlAccount (required).
	InternalNKey string
	// Authorizer is asked for the grant of every other user (required with
	// BusAuthEnforce).
	Authorizer Authorizer
	// OnAuth, if set, is called once per authentication attempt with the
	// reason (one of the Reason* constants) and the verdict, e.g. to count
	// them in Prometheus. It must not block.
	OnAuth func(reason string, allowed bool)
	// MaxConnsPerUser bounds each member's live connections on this node
	// (0: no limit); a login past it is denied (ReasonTooManyConns).
	MaxConnsPerUser int

	Logger     *slog.Logger // nats-server's log goes here; nil = slog.Default()
	MaxPayload int32        // maximum message size; 0 = nats-server default (1 MiB)

	// AllowNonLoopbackWithoutTLS lets the client listener bind a
	// non-loopback address in plaintext. Member nkeys, signatures and
	// ciphertext metadata then travel in clear.
	AllowNonLoopbackWithoutTLS bool

	// Cluster, when set, joins the node to a JetStream cluster over routes.
	Cluster *Cluster
}

// Cluster configures the route listener and the routes to the other nodes.
type Cluster struct {
	Name string // cluster name, the same on every node
	Host string // route listener address
	Port int    // route listener port; -1 picks a random free port
	// Routes are the other nodes' route URLs, bare (nats://host:6250): the
	// credentials below are injected into each, so the secret never needs
	// to appear in a URL on a command line.
	Routes []*url.URL
	// User and Pass authenticate routes in both directions (required).
	User, Pass string
	// TLS, if set, is mutual route TLS: it must require and verify client
	// certificates against the route CA (see RouteTLSConfig). Required when
	// Host is not loopback.
	TLS *tls.Config
}

// RouteTLSConfig is mutual TLS for routes: this node's certificate, and the
// route CA as the only root for both the peers it dials and the peers that
// dial it.
func RouteTLSConfig(cert tls.Certificate, routeCA *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      routeCA,
		ClientCAs:    routeCA,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// IsLoopback reports whether host names only the loopback interface:
// "localhost" or a loopback IP literal. The empty host, "0.0.0.0" and "::"
// bind every interface and are not loopback.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// busAuth returns the effective bus-auth mode.
func (o Options) busAuth() string {
	if o.BusAuth == "" {
		return BusAuthEnforce
	}
	return o.BusAuth
}

// Validate returns every problem with o at once, joined, or nil.
func (o Options) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	mode := o.busAuth()
	switch mode {
	case BusAuthEnforce, BusAuthOff:
	default:
		add("bus-auth %q is not valid: use %q or %q", o.BusAuth, BusAuthEnforce, BusAuthOff)
	}
	loop := IsLoopback(o.Host)
	if mode == BusAuthOff && !loop {
		add("--bus-auth off is only allowed when every listener binds a loopback address (data-plane host is %q): bind 127.0.0.1 or use --bus-auth enforce", o.Host)
	}
	if !loop && o.TLS == nil && !o.AllowNonLoopbackWithoutTLS {
		add("data-plane host %q is not a loopback address and TLS is not configured: set --tls-cert and --tls-key, or opt out explicitly", o.Host)
	}
	if mode == BusAuthEnforce {
		if o.Authorizer == nil {
			add("bus-auth enforce needs an Authorizer")
		}
	}
	if o.InternalNKey == "" {
		add("the internal identity's public nkey is required (it alone can reach the control-plane account)")
	} else if !nkeys.IsValidPublicUserKey(o.InternalNKey) {
		add("internal nkey is not a valid public user nkey (want \"U…\", 56 characters)")
	}
	if o.Port < -1 || o.Port > 65535 {
		add("data-plane port %d is out of range (use 1-65535, or -1 for a random port)", o.Port)
	}
	if o.StoreDir == "" {
		add("JetStream store directory is required")
	}
	if o.SyncInterval < 0 {
		add("JetStream sync interval %v is negative", o.SyncInterval)
	}
	if o.MaxPayload < 0 {
		add("max payload %d is negative", o.MaxPayload)
	}
	if c := o.Cluster; c != nil {
		if mode != BusAuthEnforce {
			add("cluster mode requires --bus-auth enforce (a cluster's posture must be the same on every node)")
		}
		if c.Name == "" {
			add("cluster mode needs a cluster name")
		}
		if o.ServerName == "" {
			add("cluster mode needs a unique node name")
		}
		if c.User == "" || c.Pass == "" {
			add("cluster mode needs a route secret (--cluster-pass-file or UNIBUS_CLUSTER_PASS)")
		}
		if c.Port < -1 || c.Port > 65535 {
			add("route port %d is out of range", c.Port)
		}
		if !IsLoopback(c.Host) && c.TLS == nil {
			add("route listener %q is not loopback: mutual route TLS is required (--route-tls-cert, --route-tls-key, --route-tls-ca)", c.Host)
		}
		if c.TLS != nil && c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
			add("route TLS must require and verify client certificates")
		}
		for _, r := range c.Routes {
			if r == nil || (r.Scheme != "nats" && r.Scheme != "nats-route" && r.Scheme != "tls") || r.Hostname() == "" || r.Port() == "" {
				add("route %v is not a URL such as nats://host:6250", r)
			}
		}
	}
	return errors.Join(errs...)
}

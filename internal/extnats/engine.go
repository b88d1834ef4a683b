package extnats

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/internal/natsnode"
)

// Options configure an Engine.
type Options struct {
	// URL is the external NATS, comma-separated seeds (nats:// or tls://).
	URL  string
	Keys *Keys
	// TLS verifies the servers (RootCAs from the operator's CA); nil uses
	// the system's roots for tls:// URLs.
	TLS *tls.Config
	// AllowNoTLS allows a plaintext connection to a server that is not on
	// loopback (--insecure-no-tls). Loud by design.
	AllowNoTLS bool
	Authorizer natsnode.Authorizer
	Logger     *slog.Logger
	OnAuth     func(reason string, allowed bool)
	// Lifetime of the user JWTs the callout issues; default UserLifetime.
	Lifetime time.Duration
}

// Engine is membershipd's view of an external NATS: the callout service,
// the system user's client, and connections for the internal identity.
// It has the methods the daemon uses of the embedded node.
type Engine struct {
	o       Options
	log     *slog.Logger
	callout *nats.Conn
	sys     *nats.Conn
	co      *Callout
	sc      *sysClient

	mu     sync.Mutex
	jsAt   time.Time
	leader string
	peers  int
	jsOn   bool
}

// Dial connects to the external NATS, starts the callout service and
// checks the server's configuration (checks.go); any problem is an error
// that names the configuration needed, and nothing stays connected.
func Dial(ctx context.Context, o Options) (e *Engine, err error) {
	if o.URL == "" || o.Keys == nil || o.Authorizer == nil {
		return nil, errors.New("external nats: URL, keys and authorizer are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	started := &Engine{o: o, log: o.Logger}
	e = started
	defer func() {
		// The error returns set e to nil: close what was started.
		if err != nil {
			started.Shutdown()
			e = nil
		}
	}()
	pub := o.Keys.Public()
	if e.callout, err = e.connect(o.Keys.CalloutUser, "membershipd-callout"); err != nil {
		return nil, e.loginError(err, "callout user", pub.CalloutUser, CalloutAccount)
	}
	if err := e.checkTLS(e.callout); err != nil {
		return nil, err
	}
	if err := checkAccount(e.callout, "callout user", CalloutAccount); err != nil {
		return nil, err
	}
	if e.co, err = StartCallout(e.callout, CalloutOptions{Keys: o.Keys, Authorizer: o.Authorizer, Logger: o.Logger.With("component", "callout"), OnAuth: o.OnAuth, Lifetime: o.Lifetime}); err != nil {
		return nil, err
	}
	if e.sys, err = e.connect(o.Keys.SystemUser, "membershipd-system"); err != nil {
		return nil, e.loginError(err, "system user", pub.SystemUser, "$SYS")
	}
	if err := checkAccount(e.sys, "system user", "$SYS"); err != nil {
		return nil, err
	}
	e.sc = &sysClient{nc: e.sys}
	if err := e.checkCallout(ctx); err != nil {
		return nil, err
	}
	if err := e.checkAccounts(ctx); err != nil {
		return nil, err
	}
	// Learn how many servers answer (logged below).
	if _, err := e.sc.ping(ctx, connzPing, []byte(`{"limit":1}`)); err != nil {
		return nil, err
	}
	e.log.Info("external NATS ready", "url", redact(o.URL), "servers", e.sc.servers.Load(), "callout_account", CalloutAccount)
	return e, nil
}

// connect logs in to the external NATS as the nkey user kp.
func (e *Engine) connect(kp nkeys.KeyPair, name string, opts ...nats.Option) (*nats.Conn, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return e.dial(pub, kp.Sign, append([]nats.Option{nats.Name(name)}, opts...)...)
}

// dial connects as the nkey user pub, signing the nonce with sign; the
// connection reconnects for ever (to any seed and any server the cluster
// announces).
func (e *Engine) dial(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{nats.Nkey(pub, sign), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false), nats.Timeout(5 * time.Second)}
	if e.o.TLS != nil {
		all = append(all, nats.Secure(e.o.TLS.Clone()))
	}
	nc, err := nats.Connect(e.o.URL, append(all, opts...)...)
	if err != nil {
		return nil, err
	}
	return nc, nil
}

// Connect logs the internal identity (pub, sign) in; the callout places
// it in ControlAccount unless opts ask for another (BusLogin,
// MembersLogin).
func (e *Engine) Connect(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	nc, err := e.dial(pub, sign, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to external NATS: %w", err)
	}
	return nc, nil
}

// ConnectBus is Connect into BusAccount.
func (e *Engine) ConnectBus(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	return e.Connect(pub, sign, append(opts, natsnode.BusLogin())...)
}

// ConnectMembers is Connect into MembersAccount.
func (e *Engine) ConnectMembers(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	return e.Connect(pub, sign, append(opts, natsnode.MembersLogin())...)
}

// kickTimeout bounds one Kick.
const kickTimeout = 5 * time.Second

// Kick closes every live connection of the member nkey on every server.
func (e *Engine) Kick(nkey string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kickTimeout)
	defer cancel()
	n, err := e.sc.kick(ctx, membersAccount, nkey, "")
	if n > 0 {
		e.log.Info("kicked data-plane connections", "nkey", nkey, "count", n)
	}
	return n, err
}

// KickMembers closes every member connection on every server (all of
// MembersAccount but the internal identity's).
func (e *Engine) KickMembers() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kickTimeout)
	defer cancel()
	return e.sc.kick(ctx, membersAccount, "", e.o.Keys.Internal.NKey())
}

// jszEvery is how long a JetStream state reading is reused.
const jszEvery = time.Second

// js reads JetStream's state from one server, at most every jszEvery.
func (e *Engine) js() (leader string, peers int, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.jsAt.IsZero() && time.Since(e.jsAt) < jszEvery {
		return e.leader, e.peers, e.jsOn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, name, err := e.sc.jsz(ctx)
	e.jsAt = time.Now()
	switch {
	case err != nil || info == nil:
		e.leader, e.peers, e.jsOn = "", 0, false
	case info.Disabled:
		e.leader, e.peers, e.jsOn = "", 0, false
	case info.Meta == nil: // a single server
		e.leader, e.peers, e.jsOn = name, 1, true
	default:
		e.leader, e.peers, e.jsOn = info.Meta.Leader, info.Meta.Size, true
	}
	return e.leader, e.peers, e.jsOn
}

// MetaLeader is the JetStream meta leader as one server sees it, and the
// meta group's size.
func (e *Engine) MetaLeader() (string, int) { l, p, _ := e.js(); return l, p }

// Quorum reports whether a server sees a JetStream meta leader.
func (e *Engine) Quorum() bool { l, _, on := e.js(); return on && l != "" }

// JetStreamEnabled reports whether the server answering has JetStream on.
func (e *Engine) JetStreamEnabled() bool { _, _, on := e.js(); return on }

// MaxStorage is the file storage JetStream may use on the server that
// answers (its jetstream.max_file_store, or what the server reserved by
// default); 0 when it cannot tell.
func (e *Engine) MaxStorage() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, _, err := e.sc.jsz(ctx)
	if err != nil || info == nil || info.Config.MaxStore <= 0 {
		return 0
	}
	return info.Config.MaxStore
}

// ClientURL is the external NATS's URL, as configured, for clients.
func (e *Engine) ClientURL() string { return e.o.URL }

// RouteURL is empty: routes are the external NATS's.
func (e *Engine) RouteURL() string { return "" }

// Shutdown stops the callout service and closes the connections.
func (e *Engine) Shutdown() {
	if e.co != nil {
		e.co.Close()
	}
	for _, nc := range []*nats.Conn{e.callout, e.sys} {
		if nc != nil {
			nc.Close()
		}
	}
}

// urls are the seeds of raw.
func urls(raw string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--nats-url %q is not a URL such as tls://nats.example:4222", s)
		}
		out = append(out, u)
	}
	return out, nil
}

// redact drops any credentials from a URL list for the log.
func redact(raw string) string {
	us, err := urls(raw)
	if err != nil {
		return "(invalid)"
	}
	var out []string
	for _, u := range us {
		u.User = nil
		out = append(out, u.String())
	}
	return strings.Join(out, ",")
}

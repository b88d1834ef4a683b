package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/natsnode"
)

// engine is what the daemon needs of the NATS engine under it: the
// embedded node (natsnode.Node), or an external NATS in front of which
// membershipd serves the auth callout (extnats.Engine, with --nats-url).
// Only these paths go through it; the cluster-only paths (the minority
// fence, the scrub) use the embedded node directly, and cluster mode is
// refused with --nats-url.
type engine interface {
	Connect(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error)
	ConnectBus(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error)
	ConnectMembers(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error)
	Kick(nkey string) (int, error)
	MetaLeader() (leader string, peers int)
	Quorum() bool
	JetStreamEnabled() bool
	ClientURL() string
	RouteURL() string
	Shutdown()
}

var (
	_ engine = embedded{}
	_ engine = (*extnats.Engine)(nil)
)

// embedded is the embedded node as an engine.
type embedded struct{ *natsnode.Node }

func (e embedded) JetStreamEnabled() bool { return e.Server().JetStreamEnabled() }

// external reports whether membershipd runs in front of an external NATS.
func (c *Config) external() bool { return c.NATSURL != "" }

// validateExternal checks the external-NATS settings.
func (c *Config) validateExternal() []error {
	if !c.external() {
		if c.NATSCreds != "" || c.NATSCA != "" {
			return []error{errors.New("--nats-creds and --nats-ca go with --nats-url")}
		}
		return nil
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NATSCreds == "" {
		add("--nats-url needs --nats-creds: the file of membershipd's external-NATS credentials (make one with 'membershipd external-nats init')")
	}
	if c.Store != StoreKV {
		add("--nats-url needs --store kv: membershipd keeps its state in the external JetStream")
	}
	if c.clustered() {
		add("--cluster-name configures the embedded engine's routes; with --nats-url the external NATS is the cluster: run one membershipd per host without it")
	}
	if c.BusAuth != BusAuthEnforce {
		add("--bus-auth off is not available with --nats-url: the auth callout admits members only")
	}
	return errs
}

// internalIdentity is the internal identity: the one in InternalIDFile
// (made on first start), or with --nats-url the one derived from the
// credentials, which every membershipd in front of the same NATS shares
// (the callout of any of them admits the others). It is also written to
// InternalIDFile when that is absent, so that the admin commands that log
// in as the internal identity (--internal-id-file) work unchanged; a file
// holding another identity is refused.
func (d *Daemon) internalIdentity() (*identity.Identity, error) {
	if !d.cfg.external() {
		return loadOrCreateIdentity(d.cfg.InternalIDFile)
	}
	keys, err := extnats.LoadKeys(d.cfg.NATSCreds)
	if err != nil {
		return nil, err
	}
	d.extKeys = keys
	id, err := identity.Load(d.cfg.InternalIDFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := keys.Internal.Save(d.cfg.InternalIDFile); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case id.NKey() != keys.Internal.NKey():
		return nil, fmt.Errorf("%s holds another internal identity than the one of --nats-creds (membershipd in front of an external NATS uses the one derived from the credentials): move it away or set --internal-id-file", d.cfg.InternalIDFile)
	}
	return keys.Internal, nil
}

// startExternal connects to the external NATS (extnats.Dial checks its
// configuration and starts the callout, which authorizes logins from the
// store) and logs the internal identity in to the bus account.
func (d *Daemon) startExternal(ctx context.Context) error {
	var tlsc *tls.Config
	if d.cfg.NATSCA != "" {
		pem, err := os.ReadFile(d.cfg.NATSCA)
		if err != nil {
			return fmt.Errorf("--nats-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--nats-ca %s holds no PEM certificate", d.cfg.NATSCA)
		}
		tlsc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	eng, err := extnats.Dial(ctx, extnats.Options{
		URL: d.cfg.NATSURL, Keys: d.extKeys, TLS: tlsc, AllowNoTLS: d.cfg.InsecureNoTLS,
		Authorizer: d.authz, Logger: d.log.With("component", "nats"), OnAuth: d.metrics.OnBusAuth,
	})
	if err != nil {
		return fmt.Errorf("external NATS: %w", err)
	}
	d.eng = eng
	// The byte quotas default to a tenth of what holds the bytes: here the
	// external JetStream's storage, not a local file system.
	for _, q := range []*int64{&d.cfg.UserBlobBytes, &d.cfg.UserMsgBytes} {
		if *q == 0 {
			if *q = eng.MaxStorage() / quotaShare; *q <= 0 {
				return errors.New("the external JetStream does not say its storage limit: set --user-blob-bytes and --user-msg-bytes in bytes (or 0 for none)")
			}
		}
	}
	if d.nc, err = d.eng.ConnectBus(d.internal.NKey(), d.internal.SignNonce, nats.Name("membershipd-internal")); err != nil {
		return fmt.Errorf("internal NATS connection: %w", err)
	}
	if d.js, err = jetstream.New(d.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

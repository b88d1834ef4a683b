package daemon_test

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
)

// bus is an in-process membershipd with its bootstrapped admin.
type bus struct {
	d     *daemon.Daemon
	cfg   daemon.Config
	roots *x509.CertPool // what clients trust, with TLS
	admin *client.Client
	adm   *identity.Identity
}

// option adjusts a bus before it starts.
type option func(*bus)

func withConfig(f func(*daemon.Config)) option { return func(b *bus) { f(&b.cfg) } }

func withRoots(p *x509.CertPool) option { return func(b *bus) { b.roots = p } }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("UNIBUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startBus starts a real membershipd (real SQLite file, real embedded
// NATS/JetStream on random loopback ports, real HTTP) in a temp dir.
func startBus(t testing.TB, opts ...option) *bus {
	t.Helper()
	b := &bus{cfg: daemon.Config{Bind: "127.0.0.1", DataDir: t.TempDir(), Bootstrap: true, Logger: testLogger(t)}}
	for _, o := range opts {
		o(b)
	}
	if b.cfg.Store == storeExternal {
		useExternalNATS(t, b) // external_test.go
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	b.d = d
	if d.AdminIDFile == "" {
		t.Fatal("no admin was bootstrapped")
	}
	if b.adm, err = identity.Load(d.AdminIDFile); err != nil {
		t.Fatal(err)
	}
	b.admin = b.dial(t, b.adm)
	return b
}

func (b *bus) clientConfig(id *identity.Identity) client.Config {
	return client.Config{Identity: id, Servers: []string{b.d.HTTPURL()}, NATS: []string{b.d.NATSURL()}, RootCAs: b.roots, Logger: testLogger(nil)}
}

func (b *bus) dial(t testing.TB, id *identity.Identity) *client.Client {
	t.Helper()
	return b.dialWith(t, b.clientConfig(id))
}

func (b *bus) dialWith(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// user registers a new identity with the admin and dials it (Dial
// publishes its KEM key).
func (b *bus) user(t testing.TB, handle string) (*identity.Identity, *client.Client) {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.AddUser(context.Background(), handle, id.SignPub().String(), "member"); err != nil {
		t.Fatal(err)
	}
	return id, b.dial(t, id)
}

// staleUser is user, but its client keeps a room's state for an hour: a
// long-lived sender whose room state predates a later removal or
// rotation, so that the relay, not the client, meets the change.
func (b *bus) staleUser(t testing.TB, handle string) (*identity.Identity, *client.Client) {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.AddUser(context.Background(), handle, id.SignPub().String(), "member"); err != nil {
		t.Fatal(err)
	}
	cfg := b.clientConfig(id)
	cfg.RoomCacheTTL = time.Hour
	return id, b.dialWith(t, cfg)
}

// storeKind is a control-plane backend the daemon tests run against.
type storeKind = daemon.StoreKind

// storeOption selects the backend k.
func storeOption(k storeKind) option { return withConfig(func(c *daemon.Config) { c.Store = k }) }

// forEachStore runs a test against both backends (the single-node
// scenarios hold on SQLite and on JetStream KV alike).
func forEachStore(t *testing.T, test func(t *testing.T, kind storeKind)) {
	for _, k := range []storeKind{daemon.StoreSQLite, daemon.StoreKV} {
		t.Run(string(k), func(t *testing.T) { test(t, k) })
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

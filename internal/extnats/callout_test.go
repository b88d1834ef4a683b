package extnats_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// grants is an Authorizer over a set of active keys, the store's answer
// reduced to what the callout asks.
type grants struct {
	mu     sync.Mutex
	active map[string]string // nkey → sign-pub hex
}

func (g *grants) Grant(_ context.Context, nkey string) (natsnode.Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h, ok := g.active[nkey]; ok {
		return natsnode.Grant{Active: true, SignPubHex: h}, nil
	}
	return natsnode.Grant{}, nil
}

func (g *grants) set(nkey, hexPub string, active bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if active {
		g.active[nkey] = hexPub
	} else {
		delete(g.active, nkey)
	}
}

type member struct {
	kp  nkeys.KeyPair
	pub string
	hex string
}

func newMember(t *testing.T) *member {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	raw, _ := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	return &member{kp: kp, pub: pub, hex: hex.EncodeToString(raw)}
}

// fixture is one or more real nats-servers configured for keys, and an
// Engine in front of them.
type fixture struct {
	keys    *extnats.Keys
	cluster *extnatstest.Cluster
	authz   *grants
	eng     *extnats.Engine
}

func newKeys(t *testing.T) *extnats.Keys {
	t.Helper()
	kp, _ := nkeys.CreateAccount()
	seed, _ := kp.Seed()
	k, err := extnats.KeysFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func start(t *testing.T, servers int) *fixture {
	t.Helper()
	f := &fixture{keys: newKeys(t), authz: &grants{active: map[string]string{}}}
	f.cluster = extnatstest.Start(t, servers, extnatstest.Config{Unibus: extnatstest.Unibus(f.keys)})
	f.eng = f.dial(t)
	return f
}

func (f *fixture) dial(t *testing.T) *extnats.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var eng *extnats.Engine
	var err error
	// A fresh cluster elects its meta leader within seconds.
	for {
		eng, err = extnats.Dial(ctx, extnats.Options{URL: f.cluster.URLs(), Keys: f.keys, Authorizer: f.authz})
		if err == nil || ctx.Err() != nil || errors.Is(err, extnats.ErrNotConfigured) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(eng.Shutdown)
	return eng
}

// connect logs in as nkey pub, signing the nonce with sign.
func (f *fixture) connect(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(f.cluster.URLs(), append([]nats.Option{nats.Nkey(pub, sign), nats.MaxReconnects(0)}, opts...)...)
}

// asyncErrs collects a connection's asynchronous errors (permission
// violations).
type asyncErrs struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrs) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err.Error())
}

func (a *asyncErrs) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		for _, e := range a.errs {
			if strings.Contains(e, substr) {
				a.mu.Unlock()
				return
			}
		}
		a.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no asynchronous error containing %q; got %v", substr, a.errs)
}

func TestCalloutMemberGetsExactlyItsPermissions(t *testing.T) {
	f := start(t, 1)
	alice, bob := newMember(t), newMember(t)
	f.authz.set(alice.pub, alice.hex, true)
	f.authz.set(bob.pub, bob.hex, true)

	// The relay's side: the internal identity in the members account.
	in := f.keys.Internal
	relay, err := f.eng.ConnectMembers(in.NKey(), in.SignNonce)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	ingress, err := relay.SubscribeSync(subjects.IngressPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	relay.Flush()
	bus, err := f.eng.ConnectBus(in.NKey(), in.SignNonce)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()

	var errs asyncErrs
	nc, err := f.connect(alice.pub, alice.kp.Sign, nats.ErrorHandler(errs.handler))
	if err != nil {
		t.Fatalf("active member refused: %v", err)
	}
	defer nc.Close()

	// Its own ingress reaches the relay.
	own := subjects.Ingress(alice.hex, "0123456789abcdef0123456789abcdef", "msg")
	if err := nc.Publish(own, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if m, err := ingress.NextMsg(3 * time.Second); err != nil || m.Subject != own {
		t.Fatalf("own ingress: %v %v", m, err)
	}
	// Its own deliveries arrive; another member's are refused.
	dlv, err := nc.SubscribeSync(subjects.Deliver(alice.hex, "t1"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	bus.Publish(subjects.Deliver(alice.hex, "t1"), []byte("d"))
	if _, err := dlv.NextMsg(3 * time.Second); err != nil {
		t.Fatalf("own delivery: %v", err)
	}
	if _, err := nc.SubscribeSync(subjects.Deliver(bob.hex, "t1")); err != nil {
		t.Fatal(err)
	}
	errs.waitFor(t, "Permissions Violation for Subscription to \""+subjects.Deliver(bob.hex, "t1"))
	// Another member's ingress, any stream subject, the JetStream API and
	// the callout subject are refused.
	for _, subj := range []string{subjects.Ingress(bob.hex, "0123456789abcdef0123456789abcdef", "msg"),
		subjects.Shared("0123456789abcdef0123456789abcdef", "msg"), "$JS.API.INFO", "$SYS.REQ.USER.AUTH", "$KV.UNIBUS_users.x"} {
		nc.Publish(subj, []byte("x"))
		errs.waitFor(t, "Permissions Violation for Publish to \""+subj)
	}
	if _, err := nc.SubscribeSync(">"); err != nil {
		t.Fatal(err)
	}
	errs.waitFor(t, "Permissions Violation for Subscription to \">\"")
	if m, err := ingress.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("relay received %s from a refused publish", m.Subject)
	}
}

func TestCalloutRefusesUnknownRevokedAndImpostors(t *testing.T) {
	f := start(t, 1)
	alice, mallory := newMember(t), newMember(t)
	f.authz.set(alice.pub, alice.hex, true)

	cases := []struct {
		name string
		pub  string
		sign func([]byte) ([]byte, error)
		opts []nats.Option
	}{
		{"unknown key", mallory.pub, mallory.kp.Sign, nil},
		{"alice's key signed by mallory", alice.pub, mallory.kp.Sign, nil},
		{"the internal identity's key signed by mallory", f.keys.Internal.NKey(), mallory.kp.Sign, nil},
		{"the callout user's key signed by mallory", f.keys.Public().CalloutUser, mallory.kp.Sign, nil},
		{"alice with a password besides", alice.pub, alice.kp.Sign, []nats.Option{nats.UserInfo("x", "y")}},
	}
	for _, c := range cases {
		nc, err := f.connect(c.pub, c.sign, c.opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: admitted", c.name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization violation", c.name, err)
		}
	}
	for _, opt := range []nats.Option{nats.UserInfo("alice", "pw"), nats.Token("tok")} {
		if nc, err := nats.Connect(f.cluster.URLs(), opt, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("a login without nkey was admitted")
		}
	}
	// Revoked: refused from then on.
	nc, err := f.connect(alice.pub, alice.kp.Sign)
	if err != nil {
		t.Fatalf("alice refused while active: %v", err)
	}
	nc.Close()
	f.authz.set(alice.pub, alice.hex, false)
	if nc, err := f.connect(alice.pub, alice.kp.Sign); err == nil {
		nc.Close()
		t.Fatal("revoked alice admitted")
	}
}

func TestInternalIdentityLandsInTheAccountItAsks(t *testing.T) {
	f := start(t, 1)
	in := f.keys.Internal
	for login, want := range map[string]string{"": natsnode.ControlAccount, natsnode.BusAccount: natsnode.BusAccount, natsnode.MembersAccount: natsnode.MembersAccount, "other": natsnode.ControlAccount} {
		var opts []nats.Option
		if login != "" {
			opts = append(opts, nats.UserInfo(login, ""))
		}
		nc, err := f.eng.Connect(in.NKey(), in.SignNonce, opts...)
		if err != nil {
			t.Fatal(err)
		}
		got, err := extnats.AccountOf(nc)
		nc.Close()
		if err != nil || got != want {
			t.Errorf("login %q: account %q (%v), want %q", login, got, err, want)
		}
	}
}

func TestKickClosesLiveConnectionsWithinASecond(t *testing.T) {
	f := start(t, 1)
	alice, bob := newMember(t), newMember(t)
	f.authz.set(alice.pub, alice.hex, true)
	f.authz.set(bob.pub, bob.hex, true)
	closed := make(chan struct{}, 4)
	var alices []*nats.Conn
	for range 3 {
		nc, err := f.connect(alice.pub, alice.kp.Sign, nats.ClosedHandler(func(*nats.Conn) { closed <- struct{}{} }), nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		alices = append(alices, nc)
	}
	bobConn, err := f.connect(bob.pub, bob.kp.Sign)
	if err != nil {
		t.Fatal(err)
	}
	defer bobConn.Close()

	f.authz.set(alice.pub, alice.hex, false)
	began := time.Now()
	n, err := f.eng.Kick(alice.pub)
	if err != nil || n != 3 {
		t.Fatalf("kick: %d, %v; want 3", n, err)
	}
	for range 3 {
		select {
		case <-closed:
		case <-time.After(time.Second):
			t.Fatal("a kicked connection is still open")
		}
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("revocation closed the connections in %v, want within 1 s", took)
	}
	t.Logf("3 connections closed %v after the kick began", time.Since(began))
	if !bobConn.IsConnected() {
		t.Fatal("another member's connection was closed")
	}
	if nc, err := f.connect(alice.pub, alice.kp.Sign); err == nil {
		nc.Close()
		t.Fatal("revoked alice admitted again")
	}
}

func TestStartChecksNameTheConfigurationNeeded(t *testing.T) {
	keys := newKeys(t)
	authz := &grants{active: map[string]string{}}
	dial := func(t *testing.T, url string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		eng, err := extnats.Dial(ctx, extnats.Options{URL: url, Keys: keys, Authorizer: authz})
		if err == nil {
			eng.Shutdown()
		}
		return err
	}
	full := extnatstest.Unibus(keys)
	other := newKeys(t).Public()
	cases := []struct {
		name    string
		conf    string
		want    error
		mention string
	}{
		{"no unibus configuration", "", extnats.ErrNotConfigured, "accounts." + extnats.CalloutAccount + ".users"},
		{"wrong issuer", strings.Replace(full, keys.Public().Issuer, other.Issuer, 1), extnats.ErrNotConfigured, "auth_callout.issuer must be " + keys.Public().Issuer},
		{"no delivery import", strings.Replace(full, "{ stream: { account: UNIBUS_BUS", "# { stream: { account: UNIBUS_BUS", 1), extnats.ErrWrongAccount, "must export the stream unibus.dlv.>"},
		{"no JetStream in the control account", strings.Replace(full, "UNIBUS_CONTROL: { jetstream: enabled }", "UNIBUS_CONTROL: { }", 1), extnats.ErrWrongAccount, "'jetstream: enabled' in accounts.UNIBUS_CONTROL"},
		{"stream delete not disabled", strings.Replace(full, `"$JS.API.STREAM.DELETE.*"`, `"$JS.API.STREAM.NOTDELETE.*"`, 1), extnats.ErrWrongAccount, "$JS.API.STREAM.DELETE.*"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := extnatstest.Start(t, 1, extnatstest.Config{Unibus: c.conf})
			err := dial(t, cl.URLs())
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.mention)
			}
			t.Log(err)
		})
	}
	t.Run("callout removed, users kept", func(t *testing.T) {
		conf := full[:strings.Index(full, "authorization {")]
		cl := extnatstest.Start(t, 1, extnatstest.Config{Unibus: conf})
		err := dial(t, cl.URLs())
		if !errors.Is(err, extnats.ErrNotConfigured) || !strings.Contains(err.Error(), "did not ask the callout") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
	t.Run("plaintext off loopback", func(t *testing.T) {
		ip := nonLoopbackIP(t)
		cl := extnatstest.Start(t, 1, extnatstest.Config{Unibus: full, Host: ip})
		err := dial(t, cl.URLs())
		if !errors.Is(err, extnats.ErrNoTLS) || !strings.Contains(err.Error(), "tls {") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
}

// nonLoopbackIP is an address of this machine off loopback.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no IPv4 address off loopback")
	return ""
}

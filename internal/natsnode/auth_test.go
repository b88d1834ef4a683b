package natsnode

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// authLog records OnAuth calls.
type authLog struct {
	mu  sync.Mutex
	got []string
}

func (l *authLog) hook(reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := "deny:"
	if ok {
		v = "allow:"
	}
	l.got = append(l.got, v+reason)
}

func (l *authLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.got {
		if g == s {
			return true
		}
	}
	return false
}

func TestAuthenticator(t *testing.T) {
	var log authLog
	tn := startNode(t, func(o *Options) { o.OnAuth = log.hook })
	url := tn.ClientURL()

	alice := newUser(t)
	tn.authz.set(alice, true)
	if _, err := connectUser(t, url, alice); err != nil {
		t.Fatalf("active member: %v", err)
	}

	revoked := newUser(t)
	tn.authz.set(revoked, false)
	stranger := newUser(t) // unknown: the Authorizer returns an error
	broken := newUser(t)
	tn.authz.set(broken, true)
	tn.authz.errs[broken.pub] = errors.New("store unavailable")
	panicky := newUser(t)
	tn.authz.panics[panicky.pub] = true
	forger := newUser(t) // claims alice's nkey, signs with its own key
	for name, try := range map[string]func() error{
		"inactive":         func() error { _, err := connectUser(t, url, revoked); return err },
		"unknown":          func() error { _, err := connectUser(t, url, stranger); return err },
		"authorizer error": func() error { _, err := connectUser(t, url, broken); return err },
		"authorizer panic": func() error { _, err := connectUser(t, url, panicky); return err },
		"bad signature": func() error {
			_, err := nats.Connect(url, nats.Nkey(alice.pub, forger.sign), nats.Timeout(2*time.Second))
			return err
		},
		"no credentials": func() error { _, err := nats.Connect(url, nats.Timeout(2*time.Second)); return err },
		"variant nkey": func() error {
			_, err := nats.Connect(url, nats.Nkey(alice.pub[:10]+"\n"+alice.pub[10:], alice.sign), nats.Timeout(2*time.Second))
			return err
		},
		"user/password": func() error { _, err := nats.Connect(url, nats.UserInfo(alice.pub, "x")); return err },
	} {
		err := try()
		if err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: got %v, want an authorization violation", name, err)
		}
	}
	if n := tn.authz.callCount(forger); n != 0 {
		t.Errorf("the Authorizer was asked about a login with a bad signature (%d calls)", n)
	}
	if n := tn.authz.callCount(&testUser{pub: alice.pub[:10] + "\n" + alice.pub[10:]}); n != 0 {
		t.Errorf("the Authorizer was asked about a variant spelling of a key (%d calls)", n)
	}
	for _, want := range []string{"allow:member", "allow:internal", "deny:inactive", "deny:authorizer_err", "deny:bad_signature", "deny:bad_nkey"} {
		if !log.has(want) {
			t.Errorf("OnAuth never saw %s (saw %v)", want, log.got)
		}
	}
}

func TestVerifyNonceEncodings(t *testing.T) {
	u := newUser(t)
	pub, ok := userKey(u.pub)
	if !ok {
		t.Fatalf("userKey(%s) refused a canonical nkey", u.pub)
	}
	nonce := []byte("nonce-123")
	sig, _ := u.sign(nonce)
	for name, enc := range map[string]string{
		"raw url": b64RawURL(sig), "std": b64Std(sig),
	} {
		if !verifyNonce(pub, enc, nonce) {
			t.Errorf("%s encoding rejected", name)
		}
	}
	for name, enc := range map[string]string{
		"empty": "", "garbage": "!!!", "other nonce": b64RawURL(must(u.sign([]byte("other")))),
		"short": b64RawURL(sig[:63]), "long": b64RawURL(append(sig[:64:64], 0)),
		"other key": b64RawURL(must(newUser(t).sign(nonce))),
	} {
		if verifyNonce(pub, enc, nonce) {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestVerifyNonceIsStdlibRule checks the login signature check against
// crypto/ed25519, the rule nats-server's own nkey authentication applies:
// the same verdict on valid signatures, on tampered ones, and on a
// signature whose S is not reduced (S + ℓ), which both must refuse.
func TestVerifyNonceIsStdlibRule(t *testing.T) {
	// ℓ, the order of the base point, little-endian.
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	addL := func(sig []byte) []byte {
		out := append([]byte(nil), sig...)
		carry := 0
		for i := 0; i < 32; i++ {
			v := int(out[32+i]) + int(l[i]) + carry
			out[32+i], carry = byte(v), v>>8
		}
		return out
	}
	for i := 0; i < 32; i++ {
		u := newUser(t)
		pub, _ := userKey(u.pub)
		nonce := []byte(fmt.Sprintf("nonce-%d", i))
		sig := must(u.sign(nonce))
		flipped := append([]byte(nil), sig...)
		flipped[i%64] ^= 1 << (i % 8)
		for name, s := range map[string][]byte{"valid": sig, "tampered": flipped, "S+l": addL(sig)} {
			want := ed25519.Verify(ed25519.PublicKey(pub), nonce, s)
			if got := verifyNonce(pub, b64RawURL(s), nonce); got != want {
				t.Errorf("%s #%d: verifyNonce %v, crypto/ed25519 %v", name, i, got, want)
			}
			if name == "valid" && !want || name != "valid" && want {
				t.Errorf("%s #%d: crypto/ed25519 says %v", name, i, want)
			}
		}
	}
}

// TestUserKeyCanonical: only the canonical spelling of a user nkey is a
// login name. The base32 decoder skips line breaks, so a variant would
// name the same key under a string that Kick (which matches the canonical
// form) would not find.
func TestUserKeyCanonical(t *testing.T) {
	u := newUser(t)
	if _, ok := userKey(u.pub); !ok {
		t.Fatal("canonical nkey refused")
	}
	seed, _ := u.kp.Seed()
	for name, k := range map[string]string{
		"empty":        "",
		"line break":   u.pub[:10] + "\n" + u.pub[10:],
		"trailing LF":  u.pub + "\n",
		"carriage ret": u.pub[:20] + "\r" + u.pub[20:],
		"lower case":   strings.ToLower(u.pub),
		"seed":         string(seed),
		"account key":  "A" + u.pub[1:],
		"truncated":    u.pub[:len(u.pub)-1],
	} {
		if _, ok := userKey(k); ok {
			t.Errorf("%s: accepted %q", name, k)
		}
	}
}

// TestAccounts checks where each identity lands and that JetStream works
// where it should: members in MembersAccount (no JetStream), ConnectBus in
// BusAccount, ConnectMembers in MembersAccount, the internal identity in
// ControlAccount by default, nobody in $G.
func TestAccounts(t *testing.T) {
	tn := startNode(t, nil)
	alice := newUser(t)
	tn.authz.set(alice, true)
	tn.ensureRoom(t, "aaaa")
	mustConnect(t, tn.ClientURL(), alice)
	relay, err := tn.ConnectMembers(tn.internal.pub, tn.internal.sign)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	overTCP, err := nats.Connect(tn.ClientURL(), nats.Nkey(tn.internal.pub, tn.internal.sign))
	if err != nil {
		t.Fatal(err)
	}
	defer overTCP.Close()

	cz, err := tn.Server().Connz(&server.ConnzOptions{Username: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, c := range cz.Conns {
		got[c.AuthorizedUser] = append(got[c.AuthorizedUser], c.Account)
	}
	if a := got[alice.pub]; len(a) != 1 || a[0] != MembersAccount {
		t.Errorf("member landed in %v, want [%s]", a, MembersAccount)
	}
	var control, bus, members int
	for _, a := range got[tn.internal.pub] {
		switch a {
		case ControlAccount:
			control++
		case BusAccount:
			bus++
		case MembersAccount:
			members++
		default:
			t.Errorf("internal identity landed in %s", a)
		}
	}
	if control != 2 || bus != 1 || members != 1 { // Connect and TCP in control, ConnectBus in bus, ConnectMembers in members
		t.Errorf("internal identity: %d control, %d bus, %d members connections; want 2, 1, 1", control, bus, members)
	}
	if acc, err := tn.Server().LookupAccount(MembersAccount); err != nil || acc.JetStreamEnabled() {
		t.Errorf("account %s: JetStream enabled or account missing (%v)", MembersAccount, err)
	}
	for _, name := range []string{BusAccount, ControlAccount} {
		acc, err := tn.Server().LookupAccount(name)
		if err != nil || !acc.JetStreamEnabled() {
			t.Errorf("account %s: JetStream not enabled (%v)", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tn.cjs.Stream(ctx, "ROOM_aaaa"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("room stream visible from the control account: %v", err)
	}
}

// TestEngineDefaultAccount pins an engine fact, which the
// node deliberately does not rely on: a user registered without an account
// lands in $G, where JetStream is on when no accounts are configured.
func TestEngineDefaultAccount(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		AlwaysEnableNonce: true, CustomClientAuthentication: registerAll{},
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	u := newUser(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.Nkey(u.pub, u.sign))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatalf("JetStream in $G: %v", err)
	}
	cz, _ := srv.Connz(&server.ConnzOptions{Username: true})
	// Connz leaves the account name empty for $G.
	if len(cz.Conns) != 1 || cz.Conns[0].Account != "" || cz.Conns[0].AuthorizedUser != u.pub {
		t.Errorf("want one connection of %s in $G, got %+v", u.pub, cz.Conns[0])
	}
}

type registerAll struct{}

func (registerAll) Check(c server.ClientAuthentication) bool {
	c.RegisterUser(&server.User{Username: c.GetOpts().Nkey, Permissions: InternalPermissions()})
	return true
}

// TestBusAuthOff: with bus-auth off anyone logs in, with full
// permissions, but only in the members account: no stream, consumer or
// bucket is reachable even then.
func TestBusAuthOff(t *testing.T) {
	tn := startNode(t, func(o *Options) { o.BusAuth = BusAuthOff; o.Authorizer = nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tn.cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "UNIBUS_users"}); err != nil {
		t.Fatal(err)
	}
	tn.ensureRoom(t, "aaaa")
	anon, err := nats.Connect(tn.ClientURL())
	if err != nil {
		t.Fatalf("anonymous client with bus-auth off: %v", err)
	}
	defer anon.Close()
	if err := anon.Publish("unibus.in.x.y.z", []byte("hi")); err != nil {
		t.Errorf("publish with bus-auth off: %v", err)
	}
	js, _ := jetstream.New(anon)
	if _, err := js.Publish(ctx, "unibus.room.aaaa.x", []byte("hi")); err == nil {
		t.Error("an anonymous client stored a message in a room stream with bus-auth off")
	}
	if _, err := js.KeyValue(ctx, "UNIBUS_users"); err == nil {
		t.Error("anonymous client reached the control-plane KV with bus-auth off")
	}
	if n := msgs(t, tn.js, "ROOM_aaaa"); n != 0 {
		t.Errorf("room stream holds %d messages", n)
	}
	// A forged nkey login is still refused, even with bus-auth off.
	forger := newUser(t)
	if _, err := nats.Connect(tn.ClientURL(), nats.Nkey(tn.internal.pub, forger.sign)); err == nil {
		t.Error("forged internal-identity login accepted")
	}
}

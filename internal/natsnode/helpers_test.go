package natsnode

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/subjects"
)

// testUser is a data-plane identity.
type testUser struct {
	kp  nkeys.KeyPair
	pub string // "U…"
	hex string // sign-pub
}

func newUser(t testing.TB) *testUser {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	raw, _ := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	return &testUser{kp: kp, pub: pub, hex: hex.EncodeToString(raw)}
}

func (u *testUser) sign(nonce []byte) ([]byte, error) { return u.kp.Sign(nonce) }

// fakeAuthz is an Authorizer over a map, counting calls per user.
type fakeAuthz struct {
	mu     sync.Mutex
	grants map[string]Grant
	errs   map[string]error
	panics map[string]bool
	calls  map[string]int
}

func newAuthz() *fakeAuthz {
	return &fakeAuthz{grants: map[string]Grant{}, errs: map[string]error{}, panics: map[string]bool{}, calls: map[string]int{}}
}

var errUnknownUser = errors.New("unknown user")

func (a *fakeAuthz) Grant(_ context.Context, nkey string) (Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls[nkey]++
	if a.panics[nkey] {
		panic("authorizer bug")
	}
	if err := a.errs[nkey]; err != nil {
		return Grant{}, err
	}
	g, ok := a.grants[nkey]
	if !ok {
		return Grant{}, errUnknownUser
	}
	return g, nil
}

func (a *fakeAuthz) set(u *testUser, active bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.grants[u.pub] = Grant{Active: active, SignPubHex: u.hex}
}

func (a *fakeAuthz) callCount(u *testUser) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[u.pub]
}

// testNode is a running node with its internal identity connected.
type testNode struct {
	*Node
	authz    *fakeAuthz
	internal *testUser
	nc       *nats.Conn          // internal identity in ControlAccount
	cjs      jetstream.JetStream // its JetStream: KV buckets
	bnc      *nats.Conn          // internal identity in BusAccount
	js       jetstream.JetStream // its JetStream: room streams
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startNode starts an enforcing node on a random loopback port; edit may
// change the options first.
func startNode(t testing.TB, edit func(*Options)) *testNode {
	t.Helper()
	tn := &testNode{authz: newAuthz(), internal: newUser(t)}
	o := Options{
		Host: "127.0.0.1", Port: -1, ServerName: "test", StoreDir: t.TempDir(),
		InternalNKey: tn.internal.pub, Authorizer: tn.authz, Logger: testLogger(t),
	}
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(n.Shutdown)
	tn.Node = n
	if tn.nc, err = n.Connect(tn.internal.pub, tn.internal.sign, nats.Name("internal")); err != nil {
		t.Fatalf("internal connect: %v", err)
	}
	t.Cleanup(tn.nc.Close)
	if tn.bnc, err = n.ConnectBus(tn.internal.pub, tn.internal.sign, nats.Name("internal-bus")); err != nil {
		t.Fatalf("internal bus connect: %v", err)
	}
	t.Cleanup(tn.bnc.Close)
	if tn.cjs, err = jetstream.New(tn.nc); err != nil {
		t.Fatal(err)
	}
	if tn.js, err = jetstream.New(tn.bnc); err != nil {
		t.Fatal(err)
	}
	return tn
}

// member is a raw nats.go connection of a user, recording async errors.
type member struct {
	nc   *nats.Conn
	errs chan error
}

// connectUser connects u over TCP with its private inbox prefix.
func connectUser(t testing.TB, url string, u *testUser, opts ...nats.Option) (*member, error) {
	t.Helper()
	m := &member{errs: make(chan error, 64)}
	all := append([]nats.Option{
		nats.Nkey(u.pub, u.sign),
		nats.CustomInboxPrefix(subjects.InboxPrefix(u.hex)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case m.errs <- err:
			default:
			}
		}),
		nats.Timeout(3 * time.Second),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, err
	}
	m.nc = nc
	t.Cleanup(nc.Close)
	return m, nil
}

func mustConnect(t testing.TB, url string, u *testUser, opts ...nats.Option) *member {
	t.Helper()
	m, err := connectUser(t, url, u, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", u.pub[:8], err)
	}
	return m
}

// expectViolation waits for a permissions violation reported on m that
// mentions subject.
func (m *member) expectViolation(t testing.TB, subject string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case err := <-m.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && containsFold(err.Error(), subject) {
				return
			}
			t.Logf("other async error: %v", err)
		case <-deadline:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// ensureRoom creates the room's stream through the internal identity.
func (tn *testNode) ensureRoom(t testing.TB, room string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := tn.js.CreateStream(ctx, jetstream.StreamConfig{Name: subjects.Stream(room), Subjects: []string{subjects.Room(room)}}); err != nil {
		t.Fatal(err)
	}
	s, err := tn.js.Stream(ctx, subjects.Stream(room))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// msgs returns the number of messages in a stream reached through js.
func msgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}

func b64RawURL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
func b64Std(b []byte) string    { return base64.StdEncoding.EncodeToString(b) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

package daemon_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// raw is a plain nats.go connection logged in with a user's nkey, with its
// asynchronous errors (permission violations) collected: an attacker who
// does not use the SDK.
type raw struct {
	nc   *nats.Conn
	mu   sync.Mutex
	errs []string
	disc chan struct{}
}

func dialRaw(t *testing.T, b *bus, id *identity.Identity, opts ...nats.Option) (*raw, error) {
	t.Helper()
	r := &raw{disc: make(chan struct{}, 16)}
	all := append([]nats.Option{
		nats.Nkey(id.NKey(), id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(id.SignPub().String())),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.mu.Lock()
			r.errs = append(r.errs, err.Error())
			r.mu.Unlock()
		}),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { r.disc <- struct{}{} }),
	}, opts...)
	nc, err := nats.Connect(b.d.NATSURL(), all...)
	if err != nil {
		return nil, err
	}
	r.nc = nc
	t.Cleanup(nc.Close)
	return r, nil
}

// denied waits for the server's permission violation naming subject.
func (r *raw) denied(t *testing.T, op, subject string) {
	t.Helper()
	harness.Eventually(t, 3*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range r.errs {
			if strings.Contains(e, "Permissions Violation for "+op) && strings.Contains(e, subject) {
				return true
			}
		}
		return false
	}, "a permissions violation for %s %q", op, subject)
}

// sharedMsgs counts the messages of a room in the shared stream, read by
// the internal identity.
func sharedMsgs(t *testing.T, b *bus, room string) uint64 {
	t.Helper()
	s, err := daemon.BusJetStream(b.d).Stream(ctxT(t), subjects.SharedStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctxT(t), jetstream.WithSubjectFilter(subjects.SharedRoom(room)))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// relaySend publishes an envelope-shaped message through the relay as the
// raw connection's user and returns the relay's answer.
func relaySend(t *testing.T, r *raw, sender *identity.Identity, room string, epoch uint64) (*jetstream.PubAck, error) {
	t.Helper()
	rid, err := e2e.ParseRoomID(room)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := e2e.NewRoomKey(nil)
	env, err := e2e.SealMessage(sender, rid, subjects.RoomTopic(room, "msg"), epoch, key, e2e.MsgID([8]byte{7}, 1), 1, make([]byte, e2e.NonceSize), []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(r.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return js.PublishMsg(ctx, &nats.Msg{Subject: subjects.Ingress(sender.SignPub().String(), room, "msg"), Header: nats.Header(env.Headers()), Data: env.Payload})
}

func relayRefused(err error, code uint16) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && uint16(apiErr.ErrorCode) == code
}

// listenerOwners returns the members of every listener on the room
// streams (from the consumers' metadata).
func listenerOwners(t *testing.T, b *bus) []string {
	t.Helper()
	js := daemon.BusJetStream(b.d)
	var out []string
	names := js.StreamNames(ctxT(t))
	for n := range names.Name() {
		s, err := js.Stream(ctxT(t), n)
		if err != nil {
			t.Fatal(err)
		}
		l := s.ListConsumers(ctxT(t))
		for info := range l.Info() {
			out = append(out, info.Config.Metadata["unibus_member"])
		}
	}
	return out
}

// TestNonMemberDeniedOnDataPlane tries, with a raw nats.go connection,
// what an active user who is not a member of a room might do to read or
// write it: nothing reaches the room.
func TestNonMemberDeniedOnDataPlane(t *testing.T) { forEachStore(t, testNonMemberDeniedOnDataPlane) }

func testNonMemberDeniedOnDataPlane(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	aliceID, alice := b.user(t, "alice")
	malloryID, mallory := b.user(t, "mallory")
	room, err := alice.CreateRoom(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.CreateRoom(ctx, "own"); err != nil { // mallory is a member of some room
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("one")); err != nil {
		t.Fatal(err)
	}
	before := sharedMsgs(t, b, room.ID)
	m, err := dialRaw(t, b, malloryID)
	if err != nil {
		t.Fatal(err)
	}
	// Through the relay, on her own ingress: refused, nothing stored.
	if _, err := relaySend(t, m, malloryID, room.ID, 1); !relayRefused(err, wire.RelayNotMember) {
		t.Fatalf("mallory's publish into alice's room: %v", err)
	}
	// Around the relay: alice's ingress, the stored subjects, the API.
	for _, subj := range []string{
		subjects.Ingress(aliceID.SignPub().String(), room.ID, "msg"),
		subjects.Shared(room.ID, "msg"),
		subjects.RoomTopic(room.ID, "msg"),
		"$JS.API.CONSUMER.CREATE." + subjects.SharedStream + ".x",
		"$JS.API.STREAM.MSG.GET." + subjects.SharedStream,
	} {
		m.nc.Publish(subj, []byte("forged"))
		m.denied(t, "Publish", subj)
	}
	for _, subj := range []string{subjects.DeliverOf(aliceID.SignPub().String()), subjects.SharedRoom(room.ID), subjects.Room(room.ID)} {
		if _, err := m.nc.SubscribeSync(subj); err == nil {
			m.nc.Flush()
			m.denied(t, "Subscription", subj)
		}
	}
	// A listener on alice's room: the control plane says no such room.
	if err := mallory.Listen(short(t), room.ID, client.ListenOptions{}, func(client.Message) {}); !client.IsCode(err, wire.CodeNotFound) {
		t.Fatalf("mallory's listener on alice's room: %v", err)
	}
	if after := sharedMsgs(t, b, room.ID); after != before {
		t.Fatalf("the room went from %d to %d messages", before, after)
	}
	for _, owner := range listenerOwners(t, b) {
		if owner == malloryID.SignPub().String() {
			t.Fatal("mallory holds a listener")
		}
	}
}

// TestMemberHasNoJetStream: a member's own connection reaches no
// JetStream API at all, even for its own room, so it can create, change,
// reset or delete nothing; and no reply subject it chooses makes the
// server store anything.
func TestMemberHasNoJetStream(t *testing.T) { forEachStore(t, testMemberHasNoJetStream) }

func testMemberHasNoJetStream(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	aliceID, alice := b.user(t, "alice")
	room, err := alice.CreateRoom(ctx, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("one")); err != nil {
		t.Fatal(err)
	}
	a, err := dialRaw(t, b, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + subjects.SharedStream,
		"$JS.API.STREAM.UPDATE." + subjects.SharedStream,
		"$JS.API.STREAM.PURGE." + subjects.SharedStream,
		"$JS.API.CONSUMER.CREATE." + subjects.SharedStream + ".mine",
		"$JS.API.CONSUMER.DURABLE.CREATE." + subjects.SharedStream + ".mine",
		"$JS.API.CONSUMER.RESET." + subjects.SharedStream + ".x",
		"$JS.API.CONSUMER.PAUSE." + subjects.SharedStream + ".x",
		"$JS.API.CONSUMER.DELETE." + subjects.SharedStream + ".x",
		"$KV.UNIBUS_users.x",
	} {
		a.nc.Publish(subj, []byte(`{}`))
		a.denied(t, "Publish", subj)
	}
	before := sharedMsgs(t, b, room.ID)
	// Where alice may publish, with reply subjects aimed at the stored
	// subjects of her own room.
	for _, subj := range []string{subjects.Ingress(aliceID.SignPub().String(), room.ID, "x"), "$JS.FC." + subjects.SharedStream + ".x.abcd"} {
		if err := a.nc.PublishRequest(subj, subjects.Shared(room.ID, "y"), nil); err != nil {
			t.Fatal(err)
		}
	}
	a.nc.Flush()
	time.Sleep(300 * time.Millisecond) // nothing to wait for: the check is that nothing was stored
	if after := sharedMsgs(t, b, room.ID); after != before {
		t.Fatalf("a reply subject made the server store %d messages", after-before)
	}
	if !a.nc.IsConnected() {
		t.Fatal("alice was disconnected")
	}
}

// TestRemovedMember: a removed member receives nothing sent after its
// removal through any path. Its listener is deleted before the API
// answers (its Listen ends); it can make no new one; the relay refuses
// its messages; a long-lived sender whose room cache predates the removal
// has its message refused as sealed for the old epoch and seals it again
// under the new one; and the stored message does not open with the
// removed member's key.
func TestRemovedMember(t *testing.T) { forEachStore(t, testRemovedMember) }

func testRemovedMember(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	bobID, bob := b.user(t, "bob")
	_, carol := b.staleUser(t, "carol") // a long-lived sender: its room state predates the removal
	room, err := alice.CreateRoom(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if err := alice.AddMember(ctx, room.ID, u, "member"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := carol.Send(ctx, room.ID, "", []byte("before")); err != nil { // carol's cache: epoch 1, bob a member
		t.Fatal(err)
	}
	// bob listens through the SDK, and reads epoch 1.
	var mu sync.Mutex
	var bobGot []client.Message
	listening := make(chan error, 1)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		listening <- bob.Listen(lctx, room.ID, client.ListenOptions{FromStart: true}, func(m client.Message) {
			mu.Lock()
			bobGot = append(bobGot, m)
			mu.Unlock()
		})
	}()
	harness.Eventually(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(bobGot) == 1 }, "bob's message delivered")
	br, err := dialRaw(t, b, bobID)
	if err != nil {
		t.Fatal(err)
	}

	if err := alice.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, owner := range listenerOwners(t, b) {
		if owner == bobID.SignPub().String() {
			t.Fatal("the removed member's listener outlived the removal's answer")
		}
	}
	// carol's cached epoch is 1: the relay refuses it, the SDK seals again.
	if _, err := carol.Send(ctx, room.ID, "", []byte("after removal, from a stale cache")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("after removal")); err != nil {
		t.Fatal(err)
	}
	got := listenN(t, alice, room.ID, 3)
	for _, m := range got[1:] {
		if m.Epoch != 2 {
			t.Fatalf("a message sent after the removal was sealed for epoch %d: %q", m.Epoch, m.Data)
		}
	}
	// bob's Listen ends (its listener is gone and it may make no other),
	// having received only what was sent before the removal.
	select {
	case err := <-listening:
		if err == nil {
			t.Fatal("bob's Listen ended without an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bob's Listen did not end after his removal")
	}
	mu.Lock()
	if len(bobGot) != 1 || string(bobGot[0].Data) != "before" {
		t.Fatalf("bob received %d messages: %+v", len(bobGot), bobGot)
	}
	mu.Unlock()
	if err := bob.Listen(short(t), room.ID, client.ListenOptions{}, func(client.Message) {}); err == nil {
		t.Fatal("bob made a new listener after his removal")
	}
	if _, err := relaySend(t, br, bobID, room.ID, 2); !relayRefused(err, wire.RelayNotMember) {
		t.Fatalf("bob's publish after removal: %v", err)
	}
	if _, err := bob.RoomInfo(ctx, room.ID); !client.IsCode(err, wire.CodeNotFound) {
		t.Fatalf("removed member read the room: %v", err)
	}
	// And bob's epoch-1 key does not open what was stored after.
	keys, err := b.d.Store().SealedKeys(ctx, room.ID, bobID.SignPub().String())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Epoch != 1 {
		t.Fatalf("bob's sealed keys: %+v", keys)
	}
	rid, _ := e2e.ParseRoomID(room.ID)
	sealer, _ := identity.ParseSignPub(keys[0].Sealer)
	k1, err := e2e.OpenRoomKey(bobID, e2e.SealedKey{Room: rid, Epoch: 1, Member: bobID.SignPub(), Sealer: sealer, Sealed: keys[0].Sealed, Sig: keys[0].Sig})
	if err != nil {
		t.Fatal(err)
	}
	env := lastEnvelope(t, b, room.ID)
	if env.Epoch != 2 {
		t.Fatalf("the last message has epoch %d", env.Epoch)
	}
	if _, err := env.Open(k1); !errors.Is(err, e2e.ErrDecrypt) {
		t.Fatalf("bob's old key opened the new epoch: %v", err)
	}
}

// TestMembershipChangesNeedNoReconnect: a user added to a room sends and
// listens at once on the connection it already had, and a member's
// removal from one room leaves its connection and its other rooms alone.
func TestMembershipChangesNeedNoReconnect(t *testing.T) {
	forEachStore(t, testMembershipChangesNeedNoReconnect)
}

func testMembershipChangesNeedNoReconnect(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	bobID, bob := b.user(t, "bob")
	other, err := bob.CreateRoom(ctx, "bob's own")
	if err != nil {
		t.Fatal(err)
	}
	br, err := dialRaw(t, b, bobID)
	if err != nil {
		t.Fatal(err)
	}
	// bob's SDK connection is up before he joins anything of alice's.
	if _, err := bob.Send(ctx, other.ID, "", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	room, err := alice.CreateRoom(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, room.ID, "", []byte("joined")); err != nil {
		t.Fatalf("send right after being added: %v", err)
	}
	if _, err := relaySend(t, br, bobID, room.ID, 1); err != nil {
		t.Fatalf("raw publish on the connection made before the addition: %v", err)
	}
	if err := alice.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, other.ID, "", []byte("still here")); err != nil {
		t.Fatalf("bob's other room after his removal from alice's: %v", err)
	}
	select {
	case <-br.disc:
		t.Fatal("a membership change closed bob's connection")
	default:
	}
	if !br.nc.IsConnected() {
		t.Fatal("bob's connection is down")
	}
}

// TestRevokedUser: 401 on the API, live NATS connection closed within 1 s,
// reconnect denied, relay refuses.
func TestRevokedUser(t *testing.T) { forEachStore(t, testRevokedUser) }

func testRevokedUser(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	bobID, bob := b.user(t, "bob")
	room, err := bob.CreateRoom(ctx, "bobs")
	if err != nil {
		t.Fatal(err)
	}
	br, err := dialRaw(t, b, bobID, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.RevokeUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-br.disc:
	case <-time.After(time.Second):
		t.Fatal("revoked user's connection was not closed within 1 s")
	}
	if _, err := bob.Me(ctx); !client.IsCode(err, "unknown_key") {
		t.Fatalf("revoked user on the API: %v", err)
	}
	if _, err := dialRaw(t, b, bobID); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("revoked user logged in again: %v", err)
	}
	if br.nc.IsConnected() {
		t.Fatal("revoked user's old connection reconnected")
	}
	// Nothing of bob's is left delivering: a sweep deletes his listeners
	// (he had none here; the sweep must not fail on the room).
	if _, err := daemon.SweepListeners(ctx, b.d); err != nil {
		t.Fatal(err)
	}
	_ = room
}

// short is a context for a call that should be refused at once.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// listenN reads the first n messages of the room from the start.
func listenN(t *testing.T, c *client.Client, room string, n int) []client.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []client.Message
	var errs []error
	err := c.Listen(ctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) { errs = append(errs, err) }}, func(m client.Message) {
		out = append(out, m)
		if len(out) == n {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < n {
		t.Fatalf("got %d of %d messages; reported: %v", len(out), n, errs)
	}
	return out
}

// lastEnvelope reads the room's last stored message as an envelope,
// through the internal identity.
func lastEnvelope(t *testing.T, b *bus, room string) *e2e.Envelope {
	t.Helper()
	s, err := daemon.BusJetStream(b.d).Stream(ctxT(t), subjects.SharedStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctxT(t), subjects.SharedRoom(room))
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := e2e.ParseRoomID(room)
	env, err := e2e.ParseEnvelope(rid, subjects.RoomTopic(room, subjects.TopicOf(room, m.Subject)), m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

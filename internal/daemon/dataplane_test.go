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
	"github.com/unibus/unibus/subjects"
)

// raw is a plain nats.go connection logged in with a user's nkey, with its
// asynchronous errors (permission violations) collected.
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
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, e := range r.errs {
			if strings.Contains(e, "Permissions Violation for "+op) && strings.Contains(e, subject) {
				r.mu.Unlock()
				return
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("no permissions violation for %s %q; errors seen: %v", op, subject, r.errs)
}

func streamMsgs(t *testing.T, js jetstream.JetStream, room string) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t), subjects.Stream(room))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestNonMemberDeniedOnDataPlane tries, with a raw nats.go connection, what
// the ACL must deny to an active user who is not a member of a room.
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
	a, err := dialRaw(t, b, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(a.nc)
	before := streamMsgs(t, ajs, room.ID)

	m, err := dialRaw(t, b, malloryID)
	if err != nil {
		t.Fatal(err)
	}
	subj := subjects.RoomTopic(room.ID, "msg")
	// Publish and subscribe on the room subject.
	m.nc.Publish(subj, []byte("forged"))
	m.denied(t, "Publish", subj)
	if _, err := m.nc.SubscribeSync(subjects.Room(room.ID)); err == nil {
		m.nc.Flush()
		m.denied(t, "Subscription", subjects.Room(room.ID))
	}
	// Through the JetStream API: consumer create, stream info, direct get.
	mjs, _ := jetstream.New(m.nc)
	if _, err := mjs.OrderedConsumer(short(t), subjects.Stream(room.ID), jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("non-member created a consumer on the room's stream")
	}
	m.denied(t, "Publish", "$JS.API.")
	for _, s := range []string{
		"$JS.API.CONSUMER.CREATE." + subjects.Stream(room.ID),
		"$JS.API.CONSUMER.CREATE." + subjects.Stream(room.ID) + ".x." + subj,
		"$JS.API.CONSUMER.DURABLE.CREATE." + subjects.Stream(room.ID) + ".x",
		"$JS.API.STREAM.INFO." + subjects.Stream(room.ID),
		"$JS.API.DIRECT.GET." + subjects.Stream(room.ID),
		"$JS.API.STREAM.MSG.GET." + subjects.Stream(room.ID),
		"$JS.API.STREAM.CREATE.KV_UNIBUS_users",
		"$JS.API.STREAM.INFO.KV_UNIBUS_users",
		"$JS.API.STREAM.INFO.OBJ_UNIBUS_blobs",
		"$KV.UNIBUS_users.x",
		"$O.UNIBUS_blobs.x",
		"$JS.API.STREAM.DELETE." + subjects.Stream(room.ID),
		"$JS.API.STREAM.PURGE." + subjects.Stream(room.ID),
		"$JS.API.STREAM.UPDATE." + subjects.Stream(room.ID),
		"$JS.API.STREAM.LIST",
		"$SYS.REQ.SERVER.PING",
		subjects.InboxPrefix(aliceID.SignPub().String()) + ".x",
	} {
		if _, err := m.nc.Request(s, []byte("{}"), 300*time.Millisecond); err == nil {
			t.Errorf("request on %s answered for a non-member", s)
		}
		m.denied(t, "Publish", s)
	}
	// Another user's inbox cannot be subscribed to.
	inbox := subjects.InboxPrefix(aliceID.SignPub().String()) + ".>"
	m.nc.SubscribeSync(inbox)
	m.nc.Flush()
	m.denied(t, "Subscription", inbox)
	// Nothing reached the stream.
	if after := streamMsgs(t, ajs, room.ID); after != before {
		t.Fatalf("room stream went from %d to %d messages", before, after)
	}
}

// TestMemberCannotAdministerStreams: even a room's owner cannot delete,
// purge or edit its stream, nor touch the control-plane buckets.
func TestMemberCannotAdministerStreams(t *testing.T) {
	forEachStore(t, testMemberCannotAdministerStreams)
}

func testMemberCannotAdministerStreams(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	aliceID, alice := b.user(t, "alice")
	room, err := alice.CreateRoom(ctx, "mine")
	if err != nil {
		t.Fatal(err)
	}
	a, err := dialRaw(t, b, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(a.nc)
	if err := js.DeleteStream(short(t), subjects.Stream(room.ID)); err == nil {
		t.Error("member deleted the room stream")
	}
	s, err := js.Stream(ctx, subjects.Stream(room.ID))
	if err != nil {
		t.Fatalf("member must be able to read its room's stream info: %v", err)
	}
	if err := s.Purge(short(t)); err == nil {
		t.Error("member purged the room stream")
	}
	if _, err := js.CreateKeyValue(short(t), jetstream.KeyValueConfig{Bucket: "evil"}); err == nil {
		t.Error("member created a KV bucket")
	}
	if _, err := js.CreateStream(short(t), jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"unibus.room." + room.ID + ".evil"}}); err == nil {
		t.Error("member created a stream")
	}
	for _, subj := range []string{"$JS.API.STREAM.DELETE.", "$JS.API.STREAM.PURGE.", "$JS.API.STREAM.CREATE."} {
		a.denied(t, "Publish", subj)
	}
}

// TestRemovedMember: the removed member's connection is closed; after it
// reconnects it cannot subscribe; messages sent after the removal are in a
// new epoch whose key it never received.
func TestRemovedMember(t *testing.T) { forEachStore(t, testRemovedMember) }

func testRemovedMember(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	bobID, bob := b.user(t, "bob")
	_, carol := b.user(t, "carol")
	room, err := alice.CreateRoom(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if err := alice.AddMember(ctx, room.ID, u, "member"); err != nil {
			t.Fatal(err)
		}
	}
	// bob can read epoch 1 before the removal.
	if _, err := alice.Send(ctx, room.ID, "", []byte("before")); err != nil {
		t.Fatal(err)
	}
	got := listenN(t, bob, room.ID, 1)
	if string(got[0].Data) != "before" || got[0].Epoch != 1 {
		t.Fatalf("bob got %+v", got[0])
	}
	br, err := dialRaw(t, b, bobID, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.nc.SubscribeSync(subjects.Room(room.ID)); err != nil {
		t.Fatal(err)
	}
	br.nc.Flush()

	if err := alice.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-br.disc:
	case <-time.After(time.Second):
		t.Fatal("removed member's connection was not closed within 1 s")
	}
	// After the reconnect (bob is still an active user) the room is gone
	// from its ACL.
	waitConnected(t, br.nc)
	sub := subjects.Room(room.ID)
	br.nc.SubscribeSync(sub)
	br.nc.Flush()
	br.denied(t, "Subscription", sub)

	if _, err := alice.Send(ctx, room.ID, "", []byte("after removal")); err != nil {
		t.Fatal(err)
	}
	after := listenN(t, carol, room.ID, 2)
	if after[1].Epoch != 2 || string(after[1].Data) != "after removal" {
		t.Fatalf("carol got %+v", after[1])
	}
	// bob holds only epoch 1; the stored message is epoch 2 and his key
	// does not open it.
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
	env := lastEnvelope(t, b, alice, room.ID)
	if env.Epoch != 2 {
		t.Fatalf("message after removal has epoch %d", env.Epoch)
	}
	if _, err := env.Open(k1); !errors.Is(err, e2e.ErrDecrypt) {
		t.Fatalf("bob's old key opened the new epoch: %v", err)
	}
	// And the control plane refuses bob the room's keys.
	if _, err := bob.RoomInfo(ctx, room.ID); !client.IsCode(err, "not_found") {
		t.Fatalf("removed member read the room: %v", err)
	}
}

// TestRevokedUser: 401 on the API, live NATS connection closed within 1 s,
// reconnect denied.
func TestRevokedUser(t *testing.T) { forEachStore(t, testRevokedUser) }

func testRevokedUser(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	bobID, bob := b.user(t, "bob")
	if _, err := bob.CreateRoom(ctx, "bobs"); err != nil {
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
}

// short is a context for a call that the ACL should deny (it then waits
// for an answer that never comes).
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitConnected(t *testing.T, nc *nats.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("not reconnected")
		}
		time.Sleep(10 * time.Millisecond)
	}
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

// lastEnvelope reads the room stream's last stored message as an envelope,
// through a member's raw JetStream access.
func lastEnvelope(t *testing.T, b *bus, member *client.Client, room string) *e2e.Envelope {
	t.Helper()
	r, err := dialRaw(t, b, member.Identity())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(r.nc)
	s, err := js.Stream(ctxT(t), subjects.Stream(room))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctxT(t))
	m, err := s.GetMsg(ctxT(t), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := e2e.ParseRoomID(room)
	env, err := e2e.ParseEnvelope(rid, m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

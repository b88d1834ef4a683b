package dataplane

import (
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// TestRelayStoresAMembersMessage: a member's message reaches the shared
// stream through the relay, with only the envelope's headers, the
// expected stream and the room's TTL; the answer is JetStream's.
func TestRelayStoresAMembersMessage(t *testing.T) {
	p := startPlane(t)
	alice := p.newUser(t, true)
	r := p.room(alice)
	r.MaxAge = time.Hour
	p.src.setRoom(r)
	h, payload := envelope(alice, 1, 1, time.Now())
	h.Set("Nats-Rollup", "all")
	h.Set("Nats-TTL", "1s")
	h.Set("Nats-Expected-Last-Sequence", "99")
	h.Set("X-Extra", "dropped")
	ack, err := alice.send(t, r.ID, "chat", h, payload)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != subjects.SharedStream || ack.Sequence != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	s, err := p.bus.Stream(p.ctx, subjects.SharedStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(p.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != subjects.Shared(r.ID, "chat") {
		t.Errorf("stored on %q", m.Subject)
	}
	want := map[string]string{jetstream.MsgTTLHeader: "3600", e2e.HdrSender: alice.hex, e2e.HdrMsgID: h.Get(e2e.HdrMsgID)}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("stored header %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"Nats-Rollup", "Nats-Expected-Last-Sequence", "X-Extra"} {
		if m.Header.Get(k) != "" {
			t.Errorf("header %s reached the stream", k)
		}
	}
	// The same message id again: de-duplicated, answered as a duplicate.
	ack, err = alice.send(t, r.ID, "chat", h, payload)
	if err != nil || !ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("resend: %+v, %v", ack, err)
	}
}

// TestRelayRefusals: each refusal is answered with its code and stores
// nothing.
func TestRelayRefusals(t *testing.T) {
	p := startPlane(t)
	alice, bob := p.newUser(t, true), p.newUser(t, true)
	ra := p.room(alice)
	ra.Epoch = 3
	p.src.setRoom(ra)
	rb := p.room(bob)
	now := time.Now()
	cases := []struct {
		name    string
		room    string
		topic   string
		edit    func(nats.Header)
		errCode uint16
	}{
		{"not a member of the room", rb.ID, "x", nil, wire.RelayNotMember},
		{"a room that does not exist", "ffffffffffffffffffffffffffffffff", "x", nil, wire.RelayNotMember},
		{"stale epoch", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrEpoch, "2") }, wire.RelayStaleEpoch},
		{"future epoch", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrEpoch, "4") }, wire.RelayStaleEpoch},
		{"protocol v1", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrVersion, "1") }, wire.RelayOldProtocol},
		{"unknown version", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrVersion, "9") }, wire.RelayBadEnvelope},
		{"sender header names bob", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrSender, bob.hex) }, wire.RelayBadEnvelope},
		{"no send time", ra.ID, "x", func(h nats.Header) { h.Del(e2e.HdrTime) }, wire.RelayBadEnvelope},
		{"send time not canonical", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrTime, "0"+h.Get(e2e.HdrTime)) }, wire.RelayBadEnvelope},
		{"send time 2 minutes old", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrTime, itoa(now.Add(-2*time.Minute).UnixMilli())) }, wire.RelayClockSkew},
		{"send time 2 minutes ahead", ra.ID, "x", func(h nats.Header) { h.Set(e2e.HdrTime, itoa(now.Add(2*time.Minute).UnixMilli())) }, wire.RelayClockSkew},
		{"two epoch headers", ra.ID, "x", func(h nats.Header) { h.Add(e2e.HdrEpoch, "3") }, wire.RelayBadEnvelope},
		{"no message id", ra.ID, "x", func(h nats.Header) { h.Del(e2e.HdrMsgID) }, wire.RelayBadEnvelope},
		{"no signature", ra.ID, "x", func(h nats.Header) { h.Del(e2e.HdrSig) }, wire.RelayBadEnvelope},
		{"room id not hex", "room-a", "x", nil, wire.RelayBadSubject},
		{"topic with a wildcard", ra.ID, "*", nil, wire.RelayBadSubject},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, payload := envelope(alice, 3, uint64(i+1), now)
			if c.edit != nil {
				c.edit(h)
			}
			_, err := alice.send(t, c.room, c.topic, h, payload)
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || uint16(apiErr.ErrorCode) != c.errCode {
				t.Fatalf("err = %v, want relay code %d", err, c.errCode)
			}
		})
	}
	t.Run("short payload", func(t *testing.T) {
		h, _ := envelope(alice, 3, 100, now)
		_, err := alice.send(t, ra.ID, "x", h, []byte("short"))
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || uint16(apiErr.ErrorCode) != wire.RelayBadEnvelope {
			t.Fatalf("err = %v", err)
		}
	})
	if n := p.stored(t, subjects.SharedStream); n != 0 {
		t.Fatalf("%d refused messages were stored", n)
	}
	// Control: the same sender, room and epoch are accepted.
	h, payload := envelope(alice, 3, 1000, now)
	if _, err := alice.send(t, ra.ID, "x", h, payload); err != nil {
		t.Fatalf("control: %v", err)
	}
}

// TestRelayRevokedAndRemoved: membership and status changes apply to the
// next message once the directory is told, with no new login.
func TestRelayRevokedAndRemoved(t *testing.T) {
	p := startPlane(t)
	alice, bob := p.newUser(t, true), p.newUser(t, true)
	r := p.room(alice, bob)
	h, payload := envelope(bob, 1, 1, time.Now())
	if _, err := bob.send(t, r.ID, "x", h, payload); err != nil {
		t.Fatal(err)
	}
	// bob is removed: the room moves to epoch 2 without him.
	r.Members = map[string]bool{alice.hex: true}
	r.Epoch = 2
	p.src.setRoom(r)
	p.dir.ForgetRoom(r.ID)
	h, payload = envelope(bob, 2, 2, time.Now())
	if _, err := bob.send(t, r.ID, "x", h, payload); !isRelayErr(err, wire.RelayNotMember) {
		t.Fatalf("removed member: %v", err)
	}
	// alice still holds epoch 1 (her cache predates the removal): refused.
	h, payload = envelope(alice, 1, 1, time.Now())
	if _, err := alice.send(t, r.ID, "x", h, payload); !isRelayErr(err, wire.RelayStaleEpoch) {
		t.Fatalf("stale sender: %v", err)
	}
	// alice is revoked (her connection is still open here).
	p.src.setUser(alice.hex, false)
	p.dir.ForgetUser(alice.hex)
	h, payload = envelope(alice, 2, 2, time.Now())
	if _, err := alice.send(t, r.ID, "x", h, payload); !isRelayErr(err, wire.RelayRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	if n := p.stored(t, subjects.SharedStream); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
}

// TestRelayAnswersOnlyTheSendersInbox: a reply subject outside the
// sender's own inbox gets no answer (the message itself is stored), so a
// member cannot make the relay publish on another subject.
func TestRelayAnswersOnlyTheSendersInbox(t *testing.T) {
	p := startPlane(t)
	alice, bob := p.newUser(t, true), p.newUser(t, true)
	r := p.room(alice)
	spy := p.node.Members(t)
	seen, err := spy.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, reply := range []string{
		subjects.Ingress(bob.hex, r.ID, "x"),
		subjects.Deliver(bob.hex, "t"),
		subjects.InboxPrefix(bob.hex) + ".x",
		"$JS.FC.x",
	} {
		h, payload := envelope(alice, 1, uint64(i+1), time.Now())
		if err := alice.nc.PublishMsg(&nats.Msg{Subject: subjects.Ingress(alice.hex, r.ID, "x"), Reply: reply, Header: h, Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return p.stored(t, subjects.SharedStream) == 4 }, "4 messages stored")
	for {
		m, err := seen.NextMsg(300 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, ok := subjects.ParseIngress(m.Subject); !ok || m.Subject != subjects.Ingress(alice.hex, r.ID, "x") {
			t.Errorf("the relay published on %q", m.Subject)
		}
	}
}

func isRelayErr(err error, code uint16) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && uint16(apiErr.ErrorCode) == code
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// TestRelayDedupIsPerSenderAndRoom: the stream de-duplicates on an id the
// relay makes from the sender, the room and the envelope's id, so a member
// publishing first with another member's next id does not get that
// message dropped as a duplicate, and one sender's ids in two rooms do not
// collide; a retry of the same message still is a duplicate.
func TestRelayDedupIsPerSenderAndRoom(t *testing.T) {
	p := startPlane(t)
	alice, mallory := p.newUser(t, true), p.newUser(t, true)
	r, r2 := p.room(alice, mallory), p.room(alice)
	now := time.Now()
	// mallory takes alice's next message id (seq 7) first.
	h, payload := envelope(mallory, 1, 7, now)
	if _, err := mallory.send(t, r.ID, "x", h, payload); err != nil {
		t.Fatal(err)
	}
	h, payload = envelope(alice, 1, 7, now) // the same Unibus-Msg-Id
	ack, err := alice.send(t, r.ID, "x", h, payload)
	if err != nil || ack.Duplicate {
		t.Fatalf("alice's message after mallory took its id: %+v %v", ack, err)
	}
	ack, err = alice.send(t, r2.ID, "x", h, payload) // the same id in another room
	if err != nil || ack.Duplicate {
		t.Fatalf("alice's id in a second room: %+v %v", ack, err)
	}
	again, err := alice.send(t, r.ID, "x", h, payload) // a retry
	if err != nil || !again.Duplicate {
		t.Fatalf("a retry of alice's message: %+v %v", again, err)
	}
	if n := p.stored(t, subjects.SharedStream); n != 3 {
		t.Fatalf("stored %d messages, want 3", n)
	}
	s, _ := p.bus.Stream(p.ctx, subjects.SharedStream)
	m, err := s.GetMsg(p.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Header.Get(jetstream.MsgIDHeader), DedupID(alice.hex, r.ID, h.Get(e2e.HdrMsgID)); got != want {
		t.Fatalf("stored Nats-Msg-Id %q, want %q", got, want)
	}
}

// A stream that never answers a message the relay passed on (its leader
// died after receiving it: nats.go's asynchronous publishes have no
// timeout of their own) must not stall the relay: the sender is told 503
// after ackWait, and the next message is answered too.
func TestRelayAnswersWhenTheStreamDoesNot(t *testing.T) {
	old := ackWait
	ackWait = 300 * time.Millisecond
	t.Cleanup(func() { ackWait = old })
	p := startPlane(t)
	alice := p.newUser(t, true)
	// A room with a stream of its own that does not exist: what listens on
	// its subjects is a subscriber that never answers.
	r := p.room(alice)
	r.Dedicated = true
	p.src.setRoom(r)
	other := p.node.Bus(t) // another connection in the bus account
	swallow, err := other.SubscribeSync(subjects.RoomTopic(r.ID, ">"))
	if err != nil {
		t.Fatal(err)
	}
	defer swallow.Unsubscribe()
	other.Flush()
	for seq := uint64(1); seq <= 2; seq++ {
		h, payload := envelope(alice, 1, seq, time.Now())
		start := time.Now()
		_, err := alice.send(t, r.ID, "chat", h, payload)
		if !isRelayErr(err, wire.RelayUnavailable) {
			var ae *jetstream.APIError
			errors.As(err, &ae)
			t.Fatalf("message %d: %v (%+v), want the relay's 503 (retry)", seq, err, ae)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("message %d answered after %v", seq, took)
		}
	}
	if m, err := swallow.NextMsg(time.Second); err != nil || m.Header.Get(jetstream.ExpectedStreamHeader) != subjects.Stream(r.ID) {
		t.Fatalf("the relay did not pass the message on to the stream's subject: %v", err)
	}
}

// With Durable set, a stored message's acknowledgement is passed on only
// once Durable has succeeded after it; when Durable fails (the disk
// failed as the message was stored) the sender is told the outcome is
// unknown, 503 with the relay's "unavailable", though the stream
// acknowledged it.
func TestRelayAcknowledgesOnlyWhatTheDiskKeeps(t *testing.T) {
	var failing atomic.Bool
	var calls atomic.Int64
	p := startPlaneWith(t, func(o *RelayOptions) {
		o.Durable = func() error {
			calls.Add(1)
			if failing.Load() {
				return syscall.EIO
			}
			return nil
		}
	})
	alice := p.newUser(t, true)
	r := p.room(alice)
	p.src.setRoom(r)
	h, payload := envelope(alice, 1, 1, time.Now())
	if ack, err := alice.send(t, r.ID, "chat", h, payload); err != nil || ack.Sequence != 1 {
		t.Fatalf("with the disk keeping what it is given: %+v %v", ack, err)
	}
	if calls.Load() < 1 {
		t.Fatal("the acknowledgement went out without Durable")
	}
	failing.Store(true)
	h, payload = envelope(alice, 1, 2, time.Now())
	_, err := alice.send(t, r.ID, "chat", h, payload)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || uint16(apiErr.ErrorCode) != wire.RelayUnavailable || apiErr.Code != 503 {
		t.Fatalf("with the disk failing after the store: %v, want 503 relay code %d", err, wire.RelayUnavailable)
	}
	s, err := p.bus.Stream(p.ctx, subjects.SharedStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMsg(p.ctx, 2); err != nil {
		t.Fatalf("the stream does not hold the message whose outcome was called unknown: %v", err)
	}
}

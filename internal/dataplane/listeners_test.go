package dataplane

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// fill stores n messages in the room's shared subject directly.
func (p *plane) fill(t *testing.T, room string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := p.bus.PublishAsync(subjects.Shared(room, "t"), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-p.bus.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				t.Fatal("fill: publishes not acknowledged")
			}
		}
	}
}

// receiver reads a listener's deliveries as the SDK does: data messages
// in order, flow-control requests answered on their reply subject.
type receiver struct {
	sub   *nats.Subscription
	got   chan *nats.Msg
	hbs   chan struct{}
	ended chan struct{} // the server's hint that it deleted the listener
	errs  chan error
}

func (u *user) receive(t *testing.T, l wire.Listener) *receiver {
	t.Helper()
	r := &receiver{got: make(chan *nats.Msg, 100000), hbs: make(chan struct{}, 100), ended: make(chan struct{}, 10)}
	sub, err := u.nc.Subscribe(l.DeliverSubject, func(m *nats.Msg) {
		if len(m.Data) == 0 && m.Header.Get("Status") == "100" {
			if m.Reply != "" {
				_ = m.Respond(nil)
			} else {
				select {
				case r.hbs <- struct{}{}:
				default:
				}
			}
			return
		}
		if len(m.Data) == 0 && m.Header.Get(wire.HdrListenerEnded) != "" {
			r.ended <- struct{}{}
			return
		}
		r.got <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := u.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// TestListenerDeliversHistoryWithFlowControl: a listener made for a member
// delivers the room's history in order to the member's own subject, more
// than one flow-control window's worth, and nothing of another room.
func TestListenerDeliversHistoryWithFlowControl(t *testing.T) {
	p := startPlane(t)
	alice := p.newUser(t, true)
	r, other := p.room(alice), p.room(alice)
	const n = 20000
	p.fill(t, r.ID, n)
	p.fill(t, other.ID, 10)
	l, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex, Deliver: wire.DeliverAll})
	if err != nil {
		t.Fatal(err)
	}
	if l.Pending != n || l.Stream != subjects.SharedStream || l.SubjectPrefix != subjects.SharedPrefix+"."+r.ID+"." {
		t.Fatalf("listener = %+v", l)
	}
	rc := alice.receive(t, l)
	var last uint64
	for i := 0; i < n; i++ {
		select {
		case m := <-rc.got:
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if md.Sequence.Stream <= last || m.Subject != subjects.Shared(r.ID, "t") {
				t.Fatalf("message %d: seq %d after %d, subject %q", i, md.Sequence.Stream, last, m.Subject)
			}
			last = md.Sequence.Stream
		case <-time.After(20 * time.Second):
			t.Fatalf("stalled after %d of %d messages", i, n)
		}
	}
}

// TestListenerIsTheMembersAlone: nobody else can subscribe to a
// listener's deliver subject, answer its flow control by guessing, or
// delete it; the member cannot delete another member's.
func TestListenerIsTheMembersAlone(t *testing.T) {
	p := startPlane(t)
	alice, mallory := p.newUser(t, true), p.newUser(t, true)
	r := p.room(alice, mallory)
	l, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.nc.SubscribeSync(l.DeliverSubject); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.nc.SubscribeSync(subjects.DeliverPrefix + ".>"); err != nil {
		t.Fatal(err)
	}
	_ = mallory.nc.Flush()
	violations := 0
	for violations < 2 {
		select {
		case err := <-mallory.errs:
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations++
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("mallory's subscriptions to alice's deliveries were not refused (%d of 2)", violations)
		}
	}
	if err := p.listeners.Delete(p.ctx, r.ID, mallory.hex, false, l.Name); !errors.Is(err, ErrNotYours) {
		t.Fatalf("mallory deleted alice's listener: %v", err)
	}
	if _, err := p.bus.PushConsumer(p.ctx, subjects.SharedStream, l.Name); err != nil {
		t.Fatalf("alice's listener is gone: %v", err)
	}
	if err := p.listeners.Delete(p.ctx, r.ID, alice.hex, false, l.Name); err != nil {
		t.Fatalf("alice's own delete: %v", err)
	}
}

// TestRemovedMembersListenersAreDeleted: DeleteMember deletes a removed
// member's listeners in that room only; Sweep deletes what a removal
// missed and any consumer that is not a listener.
func TestRemovedMembersListenersAreDeleted(t *testing.T) {
	p := startPlane(t)
	alice, bob := p.newUser(t, true), p.newUser(t, true)
	r, r2 := p.room(alice, bob), p.room(bob)
	var bobs []wire.Listener
	for _, room := range []string{r.ID, r.ID, r2.ID} {
		l, err := p.listeners.Create(p.ctx, ListenRequest{Room: room, Member: bob.hex})
		if err != nil {
			t.Fatal(err)
		}
		bobs = append(bobs, l)
	}
	al, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex})
	if err != nil {
		t.Fatal(err)
	}
	rc := bob.receive(t, bobs[0])
	n, err := p.listeners.DeleteMember(p.ctx, r.ID, bob.hex, false)
	if err != nil || n != 2 {
		t.Fatalf("DeleteMember = %d, %v", n, err)
	}
	for _, name := range []string{bobs[2].Name, al.Name} {
		if _, err := p.bus.PushConsumer(p.ctx, subjects.SharedStream, name); err != nil {
			t.Errorf("listener %s should remain: %v", name, err)
		}
	}
	// The subscriber is told its listener ended (a hint), and a message
	// sent now reaches nobody through the deleted listener.
	select {
	case <-rc.ended:
	case <-time.After(5 * time.Second):
		t.Error("no hint that the listener ended")
	}
	p.fill(t, r.ID, 1)
	select {
	case m := <-rc.got:
		t.Fatalf("removed member received %q", m.Data)
	case <-time.After(500 * time.Millisecond):
	}

	// A removal this node missed (made elsewhere while bob's listener in
	// r2 existed) and a stray consumer: the sweep deletes both.
	p.src.setRoom(Room{ID: r2.ID, Epoch: 2, Members: map[string]bool{}})
	p.dir.ForgetRoom(r2.ID)
	if _, err := p.bus.CreateConsumer(p.ctx, subjects.SharedStream, jetstream.ConsumerConfig{Name: "stray", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	n, err = p.listeners.Sweep(p.ctx, []string{subjects.SharedStream})
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if _, err := p.bus.PushConsumer(p.ctx, subjects.SharedStream, al.Name); err != nil {
		t.Fatalf("alice's listener was swept: %v", err)
	}
}

// TestListenerCap: a member gets at most MaxListeners on a node.
func TestListenerCap(t *testing.T) {
	p := startPlane(t)
	p.listeners.o.MaxListeners = 3
	alice := p.newUser(t, true)
	r := p.room(alice)
	for i := 0; i < 3; i++ {
		if _, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex}); !errors.Is(err, ErrTooManyListeners) {
		t.Fatalf("fourth listener: %v", err)
	}
}

func TestValidTopicFilter(t *testing.T) {
	for f, want := range map[string]bool{
		"a": true, "a.b": true, "a.*": true, "*": true, ">": true, "a.>": true, "*.b.>": true,
		"": false, "a..b": false, ">.a": false, "a.>.b": false, "a b": false, "a.b*": false,
	} {
		if got := ValidTopicFilter(f); got != want {
			t.Errorf("ValidTopicFilter(%q) = %v, want %v", f, got, want)
		}
	}
}

// TestListenerCapOnARoomsOwnStream: the cap holds for listeners on a
// room's own stream too, past the inactivity threshold (the count once
// forgot every listener it could not find on the shared stream).
func TestListenerCapOnARoomsOwnStream(t *testing.T) {
	p := startPlane(t)
	p.listeners.o.MaxListeners = 2
	p.listeners.o.Inactive = 2 * time.Second
	alice := p.newUser(t, true)
	r := p.room(alice)
	if err := CreateRoomStream(p.ctx, p.bus, r.ID, StreamLimits{MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex, Dedicated: true})
		if err != nil {
			t.Fatal(err)
		}
		alice.receive(t, l) // keeps it alive
	}
	time.Sleep(3 * time.Second) // past the inactivity threshold: what made the count forget
	if _, err := p.listeners.Create(p.ctx, ListenRequest{Room: r.ID, Member: alice.hex, Dedicated: true}); !errors.Is(err, ErrTooManyListeners) {
		t.Fatalf("third listener after the threshold: %v", err)
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
)

// A Listen whose listener fails asks membershipd for a new one that starts
// after the last message it handed on, and loses and repeats nothing. The
// faults are made with the internal identity, which owns the listeners'
// consumers (docs/DESIGN.md, "Listeners"):
//
//   - the listener is deleted: its heartbeats stop, as when its node is
//     lost, and Listen notices the silence;
//   - the listener skips messages: it is reset to start two messages
//     ahead, and Listen notices its consumer sequence starting over;
//   - a heartbeat says the listener delivered more than arrived, as when
//     deliveries were lost between the server and the client.
//
// In each case five messages arrive before the fault and five are sent
// after it; the ten arrive exactly once, in order, and the room ends with
// one listener, a new one.
func TestListenResumesAfterAFault(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out three missed heartbeats")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := startNode(t)
	admin := n.dial(ctx, t, n.admin, nil)
	var logs harness.LockedBuffer
	_, reader := n.user(ctx, t, admin, "reader", &logs)
	busNC, bus := n.bus(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reader's log:\n%s", logs.String())
		}
	})

	for _, fault := range []struct {
		name string
		// fromStart: the listener delivers the room's history first (a
		// reset is allowed only on such a consumer); otherwise new
		// messages only.
		fromStart bool
		// inject makes the fault on the listener l, which has delivered
		// five messages.
		inject func(t *testing.T, l *jetstream.ConsumerInfo)
		// why is what Listen logs as its reason for a new listener.
		why string
	}{
		{"listener deleted", false, func(t *testing.T, l *jetstream.ConsumerInfo) {
			if err := bus.DeleteConsumer(ctx, subjects.SharedStream, l.Name); err != nil {
				t.Fatal(err)
			}
		}, "no heartbeat for"},
		{"listener skips ahead", true, func(t *testing.T, l *jetstream.ConsumerInfo) {
			s, err := bus.Stream(ctx, subjects.SharedStream)
			if err != nil {
				t.Fatal(err)
			}
			// The next two messages (6 and 7) are never delivered; the
			// consumer sequence starts again from 1.
			if _, err := bus.ResetConsumerToSequence(ctx, subjects.SharedStream, l.Name, s.CachedInfo().State.LastSeq+3); err != nil {
				t.Fatal(err)
			}
		}, "deliveries skipped from 5 to 1"},
		{"a heartbeat reports undelivered messages", true, func(t *testing.T, l *jetstream.ConsumerInfo) {
			h := nats.Header{}
			h.Set("Status", "100")
			h.Set("Description", "Idle Heartbeat")
			h.Set("Nats-Last-Consumer", "9")
			h.Set("Nats-Last-Stream", strconv.FormatUint(l.Delivered.Stream+4, 10))
			if err := busNC.PublishMsg(&nats.Msg{Subject: l.Config.DeliverSubject, Header: h}); err != nil {
				t.Fatal(err)
			}
			// On its way to the reader before message 6 is even sent.
			if err := busNC.Flush(); err != nil {
				t.Fatal(err)
			}
		}, "deliveries 6..9 never arrived"},
	} {
		t.Run(fault.name, func(t *testing.T) {
			room, err := admin.CreateRoom(ctx, "resume")
			if err != nil {
				t.Fatal(err)
			}
			if err := admin.AddMember(ctx, room.ID, "reader", client.RoomMember); err != nil {
				t.Fatal(err)
			}
			rx := startReceiver(ctx, reader, room.ID, client.ListenOptions{FromStart: fault.fromStart})
			first := waitListener(ctx, t, bus, room.ID, "")
			send := func(from, to int) {
				t.Helper()
				for i := from; i <= to; i++ {
					if _, err := admin.Send(ctx, room.ID, "", []byte(fmt.Sprintf("m%02d", i))); err != nil {
						t.Fatal(err)
					}
				}
			}
			send(1, 5)
			rx.waitFor(t, 5)
			// The listener's state now: five deliveries.
			harness.EventuallyNoError(t, 30*time.Second, func() error {
				c, err := bus.PushConsumer(ctx, subjects.SharedStream, first.Name)
				if err != nil {
					return err
				}
				if first, err = c.Info(ctx); err != nil {
					return err
				}
				if first.Delivered.Consumer != 5 {
					return fmt.Errorf("delivered %+v", first.Delivered)
				}
				return nil
			}, "the listener's five deliveries")
			logged := strings.Count(logs.String(), fault.why)
			fault.inject(t, first)
			send(6, 10)
			rx.waitFor(t, 10)
			waitListener(ctx, t, bus, room.ID, first.Name)
			if strings.Count(logs.String(), fault.why) <= logged {
				t.Errorf("Listen did not log %q as its reason for a new listener", fault.why)
			}
			time.Sleep(500 * time.Millisecond) // nothing more should arrive: a repeat would show now
			rx.stop(t)
			rx.check(t, 10)
		})
	}
}

// A Listen ends with ErrClosed when its client is closed, deletes its
// listener, and leaves no goroutine behind: not its own, not the
// pipeline's, not the data-plane connection's, and no idle control-plane
// connection.
func TestListenEndsOnClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := startNode(t)
	admin := n.dial(ctx, t, n.admin, nil)
	_, bus := n.bus(t)
	room, err := admin.CreateRoom(ctx, "close")
	if err != nil {
		t.Fatal(err)
	}
	id := newIdentity(t)
	if _, err := admin.AddUser(ctx, "reader", id.SignPub().String(), client.RoleMember); err != nil {
		t.Fatal(err)
	}
	n.dial(ctx, t, id, nil).Close() // publishes the reader's KEM key
	if err := admin.AddMember(ctx, room.ID, id.SignPub().String(), client.RoomMember); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Send(ctx, room.ID, "", []byte("before")); err != nil {
		t.Fatal(err)
	}
	// Every goroutine that may outlive the reader's client exists now
	// (the bus connection's reply subscription once it made a request).
	if _, err := listeners(ctx, bus, room.ID); err != nil {
		t.Fatal(err)
	}
	ignore := goleak.IgnoreCurrent()

	reader := n.dial(ctx, t, id, nil)
	rx := startReceiver(ctx, reader, room.ID, client.ListenOptions{FromStart: true})
	rx.waitFor(t, 1)
	waitListener(ctx, t, bus, room.ID, "")
	reader.Close()
	select {
	case err := <-rx.done:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Listen after Close: %v, want ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Listen did not return after Close")
	}
	if _, err := reader.Send(ctx, room.ID, "", []byte("after")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	harness.EventuallyNoError(t, 30*time.Second, func() error {
		ls, err := listeners(ctx, bus, room.ID)
		if err == nil && len(ls) != 0 {
			err = fmt.Errorf("%d listeners left", len(ls))
		}
		return err
	}, "the listener deleted")
	goleak.VerifyNone(t, ignore)
}

// waitListener waits until the room has exactly one listener, other than
// the one named not, and returns it.
func waitListener(ctx context.Context, t *testing.T, bus jetstream.JetStream, room, not string) *jetstream.ConsumerInfo {
	t.Helper()
	var l *jetstream.ConsumerInfo
	harness.EventuallyNoError(t, time.Minute, func() error {
		ls, err := listeners(ctx, bus, room)
		switch {
		case err != nil:
			return err
		case len(ls) != 1:
			return fmt.Errorf("%d listeners", len(ls))
		case ls[0].Name == not:
			return fmt.Errorf("still the listener %s", not)
		}
		l = ls[0]
		return nil
	}, "one listener on room %s", room)
	return l
}

// receiver collects what a Listen delivers and reports.
type receiver struct {
	mu      sync.Mutex
	got     []string
	reports []error
	cancel  context.CancelFunc
	done    chan error
}

func startReceiver(ctx context.Context, cl *client.Client, room string, o client.ListenOptions) *receiver {
	r := &receiver{done: make(chan error, 1)}
	ctx, r.cancel = context.WithCancel(ctx)
	o.OnError = func(err error) {
		r.mu.Lock()
		r.reports = append(r.reports, err)
		r.mu.Unlock()
	}
	go func() {
		r.done <- cl.Listen(ctx, room, o, func(m client.Message) {
			r.mu.Lock()
			r.got = append(r.got, string(m.Data))
			r.mu.Unlock()
		})
	}()
	return r
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func (r *receiver) waitFor(t *testing.T, n int) {
	t.Helper()
	harness.Eventually(t, time.Minute, func() bool { return len(r.received()) >= n }, "%d messages received", n)
}

func (r *receiver) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Listen: %v", err)
	}
}

// check: m01..m<n>, each once, in order, and nothing reported.
func (r *receiver) check(t *testing.T, n int) {
	t.Helper()
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if got := r.received(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("received %v, want %v", got, want)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, err := range r.reports {
		t.Errorf("reported by Listen: %v", err)
	}
}

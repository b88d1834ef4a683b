package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/wire"
)

// Sends reuse one JetStream context per connection: each context keeps
// its own reply subscription for asynchronous publishes until the
// connection closes, so a context per send would leak one subscription
// per call.
func TestSendsShareOneReplySubscription(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dialDaemon(ctx, t)
	r, err := c.CreateRoom(ctx, "subs")
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := c.Send(ctx, r.ID, "", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SendBatch(ctx, r.ID, "", [][]byte{[]byte("a"), []byte("b")}); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := c.conn()
	if err != nil {
		t.Fatal(err)
	}
	if n := nc.NumSubscriptions(); n > 1 {
		t.Fatalf("%d subscriptions after 40 sends: one per send leaks", n)
	}
}

// Every room's messages are in one stream, and a client numbers its
// messages per room with one sender stream, so its first message to each
// room has the same message id. Each is stored all the same: the relay
// makes the stream's de-duplication id of the sender, the room and the
// message id, so none is dropped as a duplicate of another room's.
func TestSendsToSeveralRoomsAreAllStored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dialDaemon(ctx, t)
	for _, name := range []string{"one", "two", "three"} {
		r, err := c.CreateRoom(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Send(ctx, r.ID, "", []byte("hello "+name)); err != nil {
			t.Fatal(err)
		}
		var got []string
		lctx, stop := context.WithCancel(ctx)
		err = c.Listen(lctx, r.ID, ListenOptions{FromStart: true, caughtUp: stop}, func(m Message) { got = append(got, string(m.Data)) })
		stop()
		if err != nil || len(got) != 1 || got[0] != "hello "+name {
			t.Fatalf("room %s holds %q (%v), want its one message", name, got, err)
		}
	}
}

// A send that fails before it publishes anything (here: the room's state
// cannot be read) uses up no sequence number, so receivers see no gap in
// the sender's sequence when it sends again.
func TestAFailedSendLeavesNoGap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dialDaemon(ctx, t)
	r, err := c.CreateRoom(ctx, "gapless")
	if err != nil {
		t.Fatal(err)
	}
	ended, end := context.WithCancel(ctx)
	end()
	if _, err := c.Send(ended, r.ID, "", []byte("never sent")); err == nil {
		t.Fatal("a send with an ended context succeeded")
	}
	if _, err := c.Send(ctx, r.ID, "", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	var got []Message
	var reports []error
	lctx, stop := context.WithCancel(ctx)
	err = c.Listen(lctx, r.ID, ListenOptions{FromStart: true, caughtUp: stop, OnError: func(err error) { reports = append(reports, err) }},
		func(m Message) { got = append(got, m) })
	stop()
	if err != nil || len(got) != 1 || got[0].Seq != 1 || len(reports) != 0 {
		t.Fatalf("the room holds %d messages (first seq %v), reported %v (%v); want the one, seq 1, nothing reported", len(got), seqs(got), reports, err)
	}
}

func seqs(ms []Message) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

// dialDaemon starts membershipd in-process with a bootstrap admin, and
// dials the admin; both are closed at the end of the test.
func dialDaemon(ctx context.Context, t *testing.T) *Client {
	t.Helper()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: t.TempDir(), Bootstrap: true, JSSync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	adm, err := identity.Load(d.AdminIDFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, Config{Identity: adm, Servers: []string{d.HTTPURL()}, NATS: []string{d.NATSURL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A publish the relay (or the stream behind it) answered with 503 is sent
// again with the same message id; a refusal is not.
func TestRelayAnswersThatAreRetried(t *testing.T) {
	relay := func(code int, errCode uint16) error {
		return fmt.Errorf("publish: %w", &jetstream.APIError{Code: code, ErrorCode: jetstream.ErrorCode(errCode), Description: "relay"})
	}
	for _, c := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"relay unavailable", relay(503, wire.RelayUnavailable), true},
		{"stream unavailable, passed on", relay(503, 10008), true},
		{"ack timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"not a member", relay(403, wire.RelayNotMember), false},
		{"revoked", relay(403, wire.RelayRevoked), false},
		{"bad envelope", relay(400, wire.RelayBadEnvelope), false},
		{"clock skew", relay(400, wire.RelayClockSkew), false},
	} {
		if got := retryable(c.err); got != c.retry {
			t.Errorf("%s: retryable %v, want %v", c.name, got, c.retry)
		}
	}
}

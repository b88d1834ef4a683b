package natsnode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// isolation is a node with a room stream and a users bucket, and a member
// (alice) connected with a raw nats.go client, as an attacker would be.
type isolation struct {
	*testNode
	alice, bob *testUser
	m          *member
	ctx        context.Context
}

func newIsolation(t *testing.T) *isolation {
	t.Helper()
	in := &isolation{testNode: startNode(t, nil), alice: newUser(t), bob: newUser(t)}
	var cancel context.CancelFunc
	in.ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	in.authz.set(in.alice, true)
	in.authz.set(in.bob, true)
	in.ensureRoom(t, "aaaa")
	if _, err := in.js.Publish(in.ctx, "unibus.room.aaaa.msg", []byte("stored")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.cjs.CreateKeyValue(in.ctx, jetstream.KeyValueConfig{Bucket: "UNIBUS_users"}); err != nil {
		t.Fatal(err)
	}
	in.m = mustConnect(t, in.ClientURL(), in.alice)
	return in
}

// unchanged checks that nothing a member did reached a stream or bucket.
func (in *isolation) unchanged(t *testing.T) {
	t.Helper()
	if n := msgs(t, in.js, "ROOM_aaaa"); n != 1 {
		t.Errorf("the room stream holds %d messages, want 1", n)
	}
	if n := msgs(t, in.cjs, "KV_UNIBUS_users"); n != 0 {
		t.Errorf("the users bucket holds %d entries", n)
	}
	if !in.m.nc.IsConnected() {
		t.Error("alice was disconnected")
	}
}

// TestMemberPublishesOnlyOnItsIngress: every subject outside alice's own
// ingress and the flow-control subjects is a permissions violation, the
// JetStream API, room streams, the control plane and other members'
// subjects alike.
func TestMemberPublishesOnlyOnItsIngress(t *testing.T) {
	in := newIsolation(t)
	for _, subject := range []string{
		"unibus.room.aaaa.msg",
		"unibus.msgs.aaaa.msg",
		"unibus.in." + in.bob.hex + ".aaaa.msg",
		"unibus.dlv." + in.bob.hex + ".x",
		"_INBOX_" + in.bob.hex + ".x",
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.ROOM_aaaa",
		"$JS.API.STREAM.MSG.GET.ROOM_aaaa",
		"$JS.API.CONSUMER.CREATE.ROOM_aaaa.x",
		"$JS.API.CONSUMER.MSG.NEXT.ROOM_aaaa.x",
		"$JS.API.CONSUMER.RESET.ROOM_aaaa.x",
		"$JS.API.STREAM.DELETE.ROOM_aaaa",
		"$JS.ACK.ROOM_aaaa.x.1.1.1.1.1",
		"$KV.UNIBUS_users.x",
		"$O.UNIBUS_blobs.C.x",
		"$SYS.REQ.SERVER.PING",
	} {
		if err := in.m.nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		in.m.expectViolation(t, subject)
	}
	in.unchanged(t)
}

// TestMemberSubscribesOnlyToItsOwn: alice may subscribe to her own inbox
// and deliveries, nothing else.
func TestMemberSubscribesOnlyToItsOwn(t *testing.T) {
	in := newIsolation(t)
	for _, subject := range []string{
		"unibus.room.aaaa.>", "unibus.msgs.>", "unibus.in.>", "unibus.dlv.>",
		"unibus.dlv." + in.bob.hex + ".>", "_INBOX_" + in.bob.hex + ".>", "$JS.>", "$KV.>", ">",
	} {
		if _, err := in.m.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		in.m.expectViolation(t, subject)
	}
	for _, subject := range []string{"_INBOX_" + in.alice.hex + ".>", "unibus.dlv." + in.alice.hex + ".>"} {
		if _, err := in.m.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.m.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-in.m.errs:
		t.Fatalf("own subscriptions refused: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestMembersAccountHasNoJetStream: even where a member may publish (its
// ingress, the flow-control subjects), and with any reply subject, no
// JetStream API answers in its account and no server-generated message
// lands in a stream or bucket: the members account has no JetStream, and
// imports nothing but deliveries and flow control.
func TestMembersAccountHasNoJetStream(t *testing.T) {
	in := newIsolation(t)
	// A raw request to the JetStream API from the members account, as the
	// internal identity with full permissions there (the worst case).
	full, err := in.ConnectMembers(in.internal.pub, in.internal.sign)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if m, err := full.Request("$JS.API.INFO", nil, time.Second); err == nil && !strings.Contains(string(m.Data), `"err_code":10039`) {
		t.Fatalf("the JetStream API answered in the members account: %s", m.Data)
	}
	js, _ := jetstream.New(full)
	if _, err := js.Publish(in.ctx, "unibus.room.aaaa.x", []byte("m")); err == nil {
		t.Fatal("a publish in the members account reached a room stream")
	}
	// alice's permitted subjects, with reply subjects aimed at streams,
	// buckets and the destructive APIs.
	for _, reply := range []string{
		"unibus.room.aaaa.y", "unibus.msgs.aaaa.y", "$KV.UNIBUS_users.k",
		"$JS.API.STREAM.DELETE.ROOM_aaaa", "$JS.API.STREAM.PURGE.ROOM_aaaa",
	} {
		for _, subject := range []string{"unibus.in." + in.alice.hex + ".aaaa.x", "$JS.FC.ROOM_aaaa.c.abcd"} {
			if err := in.m.nc.PublishRequest(subject, reply, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := in.m.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // nothing to wait for: the check is that nothing happened
	in.unchanged(t)
	if _, err := in.js.Stream(in.ctx, "ROOM_aaaa"); err != nil {
		t.Errorf("the room stream is gone: %v", err)
	}
}

// TestDeliveriesReachOnlyTheirMember: a delivery made in the bus account
// on unibus.dlv.<alice>.… reaches alice through the import and nobody
// else, even a member subscribed with a wildcard it is allowed.
func TestDeliveriesReachOnlyTheirMember(t *testing.T) {
	in := newIsolation(t)
	b := mustConnect(t, in.ClientURL(), in.bob)
	mine, err := in.m.nc.SubscribeSync("unibus.dlv." + in.alice.hex + ".>")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := b.nc.SubscribeSync("unibus.dlv." + in.bob.hex + ".>")
	if err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{in.m.nc, b.nc} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.bnc.Publish("unibus.dlv."+in.alice.hex+".t", []byte("for alice")); err != nil {
		t.Fatal(err)
	}
	if m, err := mine.NextMsg(3 * time.Second); err != nil || string(m.Data) != "for alice" {
		t.Fatalf("alice's delivery: %v", err)
	}
	if m, err := theirs.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("bob received alice's delivery %q", m.Data)
	}
}

package natsnode

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// injection is a node with rooms aaaa (alice) and bbbb (bob, one message
// in it), a users bucket in the control account, and alice connected with
// a durable pull consumer on her own room.
type injection struct {
	*testNode
	alice, bob *testUser
	m, b       *member
	ctx        context.Context
}

func newInjection(t *testing.T) *injection {
	t.Helper()
	in := &injection{testNode: startNode(t, nil), alice: newUser(t), bob: newUser(t)}
	var cancel context.CancelFunc
	in.ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	in.authz.set(in.alice, true, "aaaa")
	in.authz.set(in.bob, true, "bbbb")
	in.ensureRoom(t, "aaaa")
	in.ensureRoom(t, "bbbb")
	if _, err := in.cjs.CreateKeyValue(in.ctx, jetstream.KeyValueConfig{Bucket: "UNIBUS_users"}); err != nil {
		t.Fatal(err)
	}
	in.m = mustConnect(t, in.ClientURL(), in.alice)
	in.b = mustConnect(t, in.ClientURL(), in.bob)
	bjs, _ := jetstream.New(in.b.nc)
	if _, err := bjs.Publish(in.ctx, "unibus.room.bbbb.msg", []byte("bob's ciphertext")); err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(in.m.nc)
	if _, err := ajs.CreateOrUpdateConsumer(in.ctx, "ROOM_aaaa", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	return in
}

// pullStatusTo makes the server publish pull-request status messages
// (404 No Messages, 408 Request Timeout: headers, empty body) to subject,
// by giving it as the reply subject of alice's pull requests.
func (in *injection) pullStatusTo(t *testing.T, subject string) {
	t.Helper()
	for _, req := range []string{`{"batch":1,"no_wait":true}`, `{"batch":1,"expires":100000000}`} {
		if err := in.m.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.ROOM_aaaa.d", subject, []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.m.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
}

// TestReplySubjectInjection: JetStream answers to reply subjects that are
// never checked against the member's permissions. Nothing sent that way
// may reach the control plane, delete or purge a stream.
func TestReplySubjectInjection(t *testing.T) {
	in := newInjection(t)
	nc := in.m.nc

	// Publish acks and API responses aimed at control-plane keys.
	if err := nc.PublishRequest("unibus.room.aaaa.x", "$KV.UNIBUS_users.k1", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.STREAM.INFO.ROOM_aaaa", "$KV.UNIBUS_users.k2", nil); err != nil {
		t.Fatal(err)
	}
	// Empty-bodied status messages aimed at destructive APIs.
	for _, subj := range []string{
		"$JS.API.STREAM.DELETE.KV_UNIBUS_users",
		"$JS.API.STREAM.PURGE.KV_UNIBUS_users",
		"$JS.API.STREAM.DELETE.ROOM_bbbb",
		"$JS.API.STREAM.PURGE.ROOM_bbbb",
		"$JS.API.STREAM.DELETE.ROOM_aaaa",
	} {
		in.pullStatusTo(t, subj)
	}
	if n := msgs(t, in.cjs, "KV_UNIBUS_users"); n != 0 {
		t.Errorf("control-plane users bucket holds %d injected entries", n)
	}
	if n := msgs(t, in.js, "ROOM_bbbb"); n < 1 {
		t.Errorf("ROOM_bbbb was purged: %d messages", n)
	}
	if _, err := in.js.Stream(in.ctx, "ROOM_aaaa"); err != nil {
		t.Errorf("ROOM_aaaa was deleted: %v", err)
	}
	if !nc.IsConnected() {
		t.Fatal("alice was disconnected")
	}

	// Known gap: inside the bus account, a publish ack can be written into
	// another room's stream. Receivers reject it (no signature, wrong room),
	// but it takes space in that stream.
	before := msgs(t, in.js, "ROOM_bbbb")
	if err := nc.PublishRequest("unibus.room.aaaa.x", "unibus.room.bbbb.y", []byte("m")); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	time.Sleep(300 * time.Millisecond)
	if after := msgs(t, in.js, "ROOM_bbbb"); after > before {
		t.Skip("known gap: a member of room A wrote a server-generated publish ack into ROOM_B by naming " +
			"unibus.room.B.* as the reply subject of a publish to room A (nats-server does not check reply " +
			"subjects against permissions). Receivers must reject it (unsigned, subject not of the room).")
	}
}

// TestPushConsumerDeliverSubject answers the research question: can a
// member create a push consumer on its own room's stream that delivers into
// another room or another user's inbox?
func TestPushConsumerDeliverSubject(t *testing.T) {
	in := newInjection(t)
	// Bob holds literal core subscriptions, on a room subject and an inbox.
	bRoom, err := in.b.nc.SubscribeSync("unibus.room.bbbb.chat")
	if err != nil {
		t.Fatal(err)
	}
	bInbox, err := in.b.nc.SubscribeSync("_INBOX_" + in.bob.hex + ".fixed")
	if err != nil {
		t.Fatal(err)
	}
	in.b.nc.Flush()
	ajs, _ := jetstream.New(in.m.nc)
	if _, err := ajs.Publish(in.ctx, "unibus.room.aaaa.x", []byte(`{"role":"admin"}`)); err != nil {
		t.Fatal(err)
	}

	create := func(name, deliver string) error {
		req, _ := json.Marshal(map[string]any{"stream_name": "ROOM_aaaa", "config": map[string]any{
			"name": name, "deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none",
		}})
		resp, err := in.m.nc.Request("$JS.API.CONSUMER.CREATE.ROOM_aaaa."+name, req, 2*time.Second)
		if err != nil {
			return err
		}
		var r struct{ Error *jetstream.APIError }
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			return err
		}
		if r.Error != nil {
			return r.Error
		}
		return nil
	}
	accepted := 0
	for name, deliver := range map[string]string{
		"kv":    "$KV.UNIBUS_users.forged",
		"api":   "$JS.API.STREAM.DELETE.ROOM_bbbb",
		"room":  "unibus.room.bbbb.chat",
		"inbox": "_INBOX_" + in.bob.hex + ".fixed",
	} {
		if err := create(name, deliver); err != nil {
			t.Logf("push consumer delivering to %s refused: %v", deliver, err)
			continue
		}
		accepted++
	}
	time.Sleep(500 * time.Millisecond)

	// Closed: the control plane is in another account, and the stream-delete
	// API is disabled (a push consumer only delivers while a subscription
	// with exactly its deliver subject exists, and only wildcard ones exist
	// on $KV.… and $JS.API.… anyway).
	if n := msgs(t, in.cjs, "KV_UNIBUS_users"); n != 0 {
		t.Errorf("users bucket holds %d entries", n)
	}
	if _, err := in.js.Stream(in.ctx, "ROOM_bbbb"); err != nil {
		t.Errorf("ROOM_bbbb deleted: %v", err)
	}
	if accepted == 0 {
		t.Log("nats-server refused every foreign deliver subject: nats-server#8274 is fixed; the gap below is closed")
		return
	}
	// Known gap: bob's literal subscriptions activate alice's consumers.
	var leaks []string
	if msg, err := bRoom.NextMsg(time.Second); err == nil {
		leaks = append(leaks, "bob's subscription on unibus.room.bbbb.chat received "+msg.Subject)
	}
	if msg, err := bInbox.NextMsg(100 * time.Millisecond); err == nil {
		leaks = append(leaks, "bob's inbox received "+msg.Subject)
	}
	if n := msgs(t, in.js, "ROOM_bbbb"); n > 1 {
		leaks = append(leaks, "ROOM_bbbb stored room A's messages")
	}
	if len(leaks) > 0 {
		t.Skipf("known gap (nats-server#8274: no permission check on a push consumer's deliver subject; "+
			"not expressible in a subject ACL because nats.go's pull consumers use the same create subjects): %v", leaks)
	}
}

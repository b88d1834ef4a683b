package natsnode

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestMemberReadsAndWritesOwnRoom is the positive path: with nothing but
// its ACL, a member publishes with acknowledgement and reads back through
// an ordered consumer and a durable pull consumer, so the ACL is known to
// be sufficient for nats.go's jetstream package.
func TestMemberReadsAndWritesOwnRoom(t *testing.T) {
	tn := startNode(t, nil)
	alice := newUser(t)
	tn.authz.set(alice, true, "aaaa")
	tn.ensureRoom(t, "aaaa")
	m := mustConnect(t, tn.ClientURL(), alice)
	js, err := jetstream.New(m.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for i, body := range []string{"one", "two", "three"} {
		ack, err := js.Publish(ctx, "unibus.room.aaaa.msg", []byte(body), jetstream.WithMsgID("id-"+body))
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if ack.Stream != "ROOM_aaaa" || ack.Sequence != uint64(i+1) {
			t.Fatalf("ack %+v", ack)
		}
	}
	if ack, err := js.Publish(ctx, "unibus.room.aaaa.msg", []byte("one"), jetstream.WithMsgID("id-one")); err != nil || !ack.Duplicate {
		t.Errorf("re-publish of a message id: %+v %v, want a duplicate", ack, err)
	}

	stream, err := js.Stream(ctx, "ROOM_aaaa")
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if raw, err := stream.GetMsg(ctx, 2); err != nil || string(raw.Data) != "two" {
		t.Errorf("get message 2: %v %v", raw, err)
	}

	oc, err := js.OrderedConsumer(ctx, "ROOM_aaaa", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	expect(t, "ordered", oc, noAck, "one", "two", "three")

	dur, err := js.CreateOrUpdateConsumer(ctx, "ROOM_aaaa", jetstream.ConsumerConfig{
		Durable: "alice-reader", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "unibus.room.aaaa.>",
	})
	if err != nil {
		t.Fatalf("durable consumer: %v", err)
	}
	expect(t, "durable", dur, syncAck, "one", "two")
	if _, err := dur.Info(ctx); err != nil {
		t.Errorf("consumer info: %v", err)
	}
	// The durable resumes after the acknowledged messages.
	dur2, err := js.Consumer(ctx, "ROOM_aaaa", "alice-reader")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "durable resumed", dur2, asyncAck, "three")
	if err := js.DeleteConsumer(ctx, "ROOM_aaaa", "alice-reader"); err != nil {
		t.Errorf("delete own consumer: %v", err)
	}
	select {
	case err := <-m.errs:
		t.Errorf("async error on the positive path: %v", err)
	default:
	}
}

// Acknowledgement modes for expect.
const (
	noAck    = iota // ordered consumers do not take acks
	syncAck         // double ack: waits for the server's confirmation
	asyncAck        // plain ack
)

// expect fetches len(want) messages from c and acknowledges them.
func expect(t *testing.T, name string, c jetstream.Consumer, ack int, want ...string) {
	t.Helper()
	batch, err := c.Fetch(len(want), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("%s fetch: %v", name, err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
		switch ack {
		case syncAck:
			err = msg.DoubleAck(context.Background())
		case asyncAck:
			err = msg.Ack()
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			t.Errorf("%s ack: %v", name, err)
		}
	}
	if batch.Error() != nil {
		t.Errorf("%s batch: %v", name, batch.Error())
	}
	if len(got) != len(want) {
		t.Fatalf("%s: got %q, want %q", name, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: got %q, want %q", name, got, want)
		}
	}
}

// TestNonMemberEscapes is a member of room A trying, with a raw nats.go
// connection, everything its ACL must refuse.
func TestNonMemberEscapes(t *testing.T) {
	tn := startNode(t, nil)
	alice, bob := newUser(t), newUser(t)
	tn.authz.set(alice, true, "aaaa")
	tn.authz.set(bob, true, "bbbb")
	tn.ensureRoom(t, "aaaa")
	tn.ensureRoom(t, "bbbb")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tn.cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "UNIBUS_users"}); err != nil {
		t.Fatal(err)
	}
	m := mustConnect(t, tn.ClientURL(), alice)

	t.Run("publish to another room", func(t *testing.T) {
		if err := m.nc.Publish("unibus.room.bbbb.x", []byte("intrusion")); err != nil {
			t.Fatal(err)
		}
		m.expectViolation(t, "unibus.room.bbbb.x")
		if n := msgs(t, tn.js, "ROOM_bbbb"); n != 0 {
			t.Errorf("ROOM_bbbb holds %d messages", n)
		}
	})

	for _, subj := range []string{
		"unibus.room.bbbb.>", "unibus.room.bbbb.x", "unibus.room.>", "unibus.>", ">",
		"_INBOX_" + bob.hex + ".>", "_INBOX.>", "$KV.>", "$KV.UNIBUS_users.>", "$SYS.>", "$JS.API.>", "$JS.EVENT.>",
	} {
		t.Run("subscribe "+subj, func(t *testing.T) {
			sub, err := m.nc.SubscribeSync(subj)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			m.expectViolation(t, subj)
		})
	}

	// JetStream API requests: each must be refused by the ACL, answered by
	// nobody, and leave the streams as they were.
	for _, subj := range []string{
		"$JS.API.STREAM.INFO.ROOM_bbbb",
		"$JS.API.CONSUMER.CREATE.ROOM_bbbb",
		"$JS.API.CONSUMER.CREATE.ROOM_bbbb.x",
		"$JS.API.CONSUMER.DURABLE.CREATE.ROOM_bbbb.x",
		"$JS.API.CONSUMER.MSG.NEXT.ROOM_bbbb.x",
		"$JS.API.STREAM.MSG.GET.ROOM_bbbb",
		"$JS.API.CONSUMER.CREATE.ROOM_aaaa", // legacy form, own room
		"$JS.API.CONSUMER.DURABLE.CREATE.ROOM_aaaa.x",
		"$JS.API.STREAM.CREATE.ROOM_aaaa",
		"$JS.API.STREAM.UPDATE.ROOM_aaaa",
		"$JS.API.STREAM.DELETE.ROOM_aaaa",
		"$JS.API.STREAM.PURGE.ROOM_aaaa",
		"$JS.API.STREAM.MSG.DELETE.ROOM_aaaa",
		"$JS.API.STREAM.SNAPSHOT.ROOM_aaaa",
		"$JS.API.STREAM.CREATE.EVIL",
		"$JS.API.STREAM.INFO.KV_UNIBUS_users",
		"$JS.API.STREAM.INFO.OBJ_UNIBUS_blobs",
		"$JS.API.STREAM.LIST",
		"$JS.API.INFO",
		"$KV.UNIBUS_users.x",
		"$SYS.REQ.SERVER.PING.CONNZ",
	} {
		t.Run("request "+subj, func(t *testing.T) {
			body := []byte(`{"name":"ROOM_aaaa","subjects":["unibus.room.aaaa.>"]}`)
			if _, err := m.nc.Request(subj, body, 300*time.Millisecond); err == nil {
				t.Error("request answered")
			}
			m.expectViolation(t, subj)
		})
	}

	// Through the jetstream package as well, on her own room.
	js, _ := jetstream.New(m.nc)
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 500*time.Millisecond) }
	c1, done := short()
	if _, err := js.CreateStream(c1, jetstream.StreamConfig{Name: "ROOM_aaaa", Subjects: []string{"unibus.room.aaaa.>", "unibus.room.bbbb.>"}}); err == nil {
		t.Error("stream create of own room succeeded")
	}
	done()
	c2, done := short()
	if _, err := js.UpdateStream(c2, jetstream.StreamConfig{Name: "ROOM_aaaa", Subjects: []string{"unibus.room.>"}}); err == nil {
		t.Error("stream update of own room succeeded")
	}
	done()
	c3, done := short()
	if err := js.DeleteStream(c3, "ROOM_aaaa"); err == nil {
		t.Error("stream delete of own room succeeded")
	}
	done()
	if s, err := tn.js.Stream(ctx, "ROOM_aaaa"); err != nil || len(s.CachedInfo().Config.Subjects) != 1 {
		t.Errorf("ROOM_aaaa after the attempts: %v", err)
	}
	c4, done := short()
	if _, err := js.KeyValue(c4, "UNIBUS_users"); err == nil {
		t.Error("KV bucket reachable")
	}
	done()
	if n := msgs(t, tn.cjs, "KV_UNIBUS_users"); n != 0 {
		t.Errorf("users bucket holds %d entries", n)
	}
	if !m.nc.IsConnected() {
		t.Error("the member was disconnected by its violations")
	}
}

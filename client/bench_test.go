package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/daemon"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/subjects"
)

// benchBatch is how many messages one benchmark iteration sends and receives.
const benchBatch = 2000

// BenchmarkRoomMessages1K compares, in one run and on one membershipd,
// 1 KiB room messages sent and received raw through JetStream with the same
// messages end to end through the SDK (encrypt+sign → JetStream →
// verify+decrypt). Both use pipelined publishes with acknowledgement and an
// ordered consumer on a room stream of the same configuration. It reports
// msgs/s of each, their ratio, and the ed25519 sign and verify ceilings
// (one core) measured in the same run. Run with -js-sync semantics of the
// daemon default (fsync before ack) and with a 2 m interval.
func BenchmarkRoomMessages1K(b *testing.B) {
	for _, sync := range []string{"always", "2m"} {
		b.Run("js-sync="+sync, func(b *testing.B) { benchRoom(b, sync, 1024) })
	}
}

func benchRoom(b *testing.B, sync string, size int) {
	ctx := context.Background()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: b.TempDir(), Bootstrap: true, JSSync: sync})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	admID, err := identity.Load(d.AdminIDFile)
	if err != nil {
		b.Fatal(err)
	}
	cfg := client.Config{Identity: admID, Servers: []string{d.HTTPURL()}, NATS: []string{d.NATSURL()}}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	nc, err := nats.Connect(d.NATSURL(), nats.Nkey(admID.NKey(), admID.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(admID.SignPub().String())))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	payload := make([]byte, size)
	rand.Read(payload)
	batch := make([][]byte, benchBatch)
	for i := range batch {
		batch[i] = payload
	}

	var rawDur, e2eDur time.Duration
	for b.Loop() {
		// Fresh rooms (same stream configuration) each round, outside the
		// timed part, so each round reads exactly its own messages.
		e2eRoom, err := c.CreateRoom(ctx, "bench-e2e")
		if err != nil {
			b.Fatal(err)
		}
		rawRoom, err := c.CreateRoom(ctx, "bench-raw")
		if err != nil {
			b.Fatal(err)
		}
		nc.Close()
		if nc, err = nats.Connect(d.NATSURL(), nats.Nkey(admID.NKey(), admID.SignNonce),
			nats.CustomInboxPrefix(subjects.InboxPrefix(admID.SignPub().String()))); err != nil {
			b.Fatal(err)
		}
		js, _ = jetstream.New(nc)
		rawDur += timeIt(b, func() { rawRoundTrip(b, js, rawRoom.ID, payload) })
		e2eDur += timeIt(b, func() { e2eRoundTrip(b, c, e2eRoom.ID, batch) })
	}
	n := float64(b.N * benchBatch)
	rawRate, e2eRate := n/rawDur.Seconds(), n/e2eDur.Seconds()
	signRate, verifyRate := ed25519Ceilings()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(e2eRate, "e2e-msgs/s")
	b.ReportMetric(e2eRate/rawRate, "e2e/raw")
	b.ReportMetric(signRate, "sign-ceiling/s")
	b.ReportMetric(verifyRate, "verify-ceiling/s")
	b.ReportMetric(0, "ns/op")
}

func timeIt(b *testing.B, f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// rawRoundTrip publishes benchBatch plaintext messages (pipelined, with
// acks) and reads them back with an ordered consumer.
func rawRoundTrip(b *testing.B, js jetstream.JetStream, room string, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	subj := subjects.RoomTopic(room, "msg")
	futures := make([]jetstream.PubAckFuture, 0, benchBatch)
	for i := 0; i < benchBatch; i++ {
		f, err := js.PublishAsync(subj, payload)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	cons, err := js.OrderedConsumer(ctx, subjects.Stream(room), jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		got++
		if got == benchBatch {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("raw: received %d of %d", got, benchBatch)
	}
	cc.Stop()
}

// e2eRoundTrip sends benchBatch messages through the SDK and receives them
// through the SDK's verifying, decrypting Listen.
func e2eRoundTrip(b *testing.B, c *client.Client, room string, batch [][]byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids, err := c.SendBatch(ctx, room, "", batch)
	if err != nil {
		b.Fatal(err)
	}
	last := ids[len(ids)-1]
	lctx, lcancel := context.WithCancel(ctx)
	got := 0
	err = c.Listen(lctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) { b.Error(err) }}, func(m client.Message) {
		got++
		if m.MsgID == last {
			lcancel()
		}
	})
	lcancel()
	if err != nil {
		b.Fatal(err)
	}
	if got != len(batch) {
		b.Fatalf("e2e: received %d of %d", got, len(batch))
	}
}

// ed25519Ceilings measures one core's sign and verify rates for a 1 KiB
// message's signed bytes.
func ed25519Ceilings() (sign, verify float64) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := make([]byte, 1024+120)
	const n = 2000
	start := time.Now()
	var sig []byte
	for i := 0; i < n; i++ {
		sig = ed25519.Sign(priv, msg)
	}
	sign = n / time.Since(start).Seconds()
	start = time.Now()
	for i := 0; i < n; i++ {
		if !ed25519.Verify(pub, msg, sig) {
			panic("verify")
		}
	}
	verify = n / time.Since(start).Seconds()
	return
}

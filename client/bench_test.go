package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// benchBatch is how many messages one benchmark iteration sends and receives.
const benchBatch = 2000

// BenchmarkRoomMessages compares, in one run and on one membershipd (a
// separate process, so that this process's CPU and allocations are the
// clients' alone), room messages stored and read raw through JetStream
// with the same messages end to end through the SDK (encrypt+sign →
// relay → shared stream → listener → verify+decrypt), for 256 B, 1 KiB
// and 16 KiB payloads. The raw path is the engine alone: membershipd's
// internal identity publishes plaintext straight onto a room's subject of
// the shared stream and reads it back with an ordered consumer (members
// cannot use JetStream; this is the ceiling the SDK's path is measured
// against). Each path has a sender and a receiver with their own
// connections, publishes pipelined with acknowledgement, and stores each
// iteration's benchBatch messages on a fresh room's subjects before
// reading them all back. It reports msgs/s of each, their ratio, the
// clients' heap allocations per message of each path, and the ed25519
// verify ceilings (crypto/ed25519 and the SDK's batch verifier, one core)
// measured in the same run. The daemon runs with fsync before
// acknowledgement (the default) and with a 2 m flush interval.
// cmd/unibus-bench measures more (latency, all cores, catch-up reads, the
// control plane); this benchmark is the quick check.
func BenchmarkRoomMessages(b *testing.B) {
	for _, sync := range []string{"always", "2m"} {
		b.Run("js-sync="+sync, func(b *testing.B) {
			bus := harness.StartBus(b, b.TempDir(), "--js-sync", sync)
			f := newBenchFixture(b, bus)
			for _, size := range []int{256, 1024, 16384} {
				b.Run(fmt.Sprint(size), func(b *testing.B) { f.run(b, size) })
			}
		})
	}
}

type benchFixture struct {
	bus     *harness.Bus
	adm, rx *identity.Identity
	admC    *client.Client
	rxC     *client.Client
	// rawPub and rawSub are the internal identity's JetStream contexts in
	// the bus account, on two connections.
	rawPub, rawSub jetstream.JetStream
}

func newBenchFixture(b *testing.B, bus *harness.Bus) *benchFixture {
	ctx := context.Background()
	f := &benchFixture{bus: bus}
	var err error
	if f.adm, err = identity.Load(filepath.Join(bus.Dir, "local_files", "admin.id")); err != nil {
		b.Fatal(err)
	}
	f.rx, _ = identity.Generate()
	if f.admC, err = client.Dial(ctx, f.config(f.adm)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.admC.Close)
	if _, err := f.admC.AddUser(ctx, "bench-rx", f.rx.SignPub().String(), client.RoleMember); err != nil {
		b.Fatal(err)
	}
	if f.rxC, err = client.Dial(ctx, f.config(f.rx)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.rxC.Close)
	f.rawPub, f.rawSub = f.internalConnect(b), f.internalConnect(b)
	return f
}

func (f *benchFixture) config(id *identity.Identity) client.Config {
	return client.Config{Identity: id, Servers: []string{f.bus.HTTPURL}, NATS: []string{f.bus.NATSURL}}
}

// room creates a room of the admin's with the receiver in it.
func (f *benchFixture) room(b *testing.B, name string) string {
	ctx := context.Background()
	r, err := f.admC.CreateRoom(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.admC.AddMember(ctx, r.ID, f.rx.SignPub().String(), client.RoomMember); err != nil {
		b.Fatal(err)
	}
	return r.ID
}

// internalConnect logs in as membershipd's internal identity in the bus
// account, where the streams are.
func (f *benchFixture) internalConnect(b *testing.B) jetstream.JetStream {
	id, err := identity.Load(filepath.Join(f.bus.Dir, "local_files", "internal.id"))
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(f.bus.NATSURL, nats.Nkey(id.NKey(), id.SignNonce), natsnode.BusLogin())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}

func (f *benchFixture) run(b *testing.B, size int) {
	payload := make([]byte, size)
	rand.Read(payload)
	batch := make([][]byte, benchBatch)
	for i := range batch {
		batch[i] = payload
	}
	var rawDur, e2eDur time.Duration
	var rawAllocs, e2eAllocs uint64
	for b.Loop() {
		// Fresh rooms each round, outside the timed part, so each round
		// reads exactly its own messages. The raw room is only subjects
		// of the shared stream: the engine needs no room record.
		e2eRoom := f.room(b, "bench-e2e")
		rawRoom, err := e2e.NewRoomID()
		if err != nil {
			b.Fatal(err)
		}
		d, a := measure(func() { rawRoundTrip(b, f.rawPub, f.rawSub, rawRoom.String(), payload) })
		rawDur, rawAllocs = rawDur+d, rawAllocs+a
		d, a = measure(func() { e2eRoundTrip(b, f.admC, f.rxC, e2eRoom, batch) })
		e2eDur, e2eAllocs = e2eDur+d, e2eAllocs+a
	}
	n := float64(b.N * benchBatch)
	rawRate, e2eRate := n/rawDur.Seconds(), n/e2eDur.Seconds()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(e2eRate, "e2e-msgs/s")
	b.ReportMetric(e2eRate/rawRate, "e2e/raw")
	b.ReportMetric(float64(rawAllocs)/n, "raw-allocs/msg")
	b.ReportMetric(float64(e2eAllocs)/n, "e2e-allocs/msg")
	std, sdk := verifyCeilings(b, size)
	b.ReportMetric(std, "std-verify/s")
	b.ReportMetric(sdk, "sdk-batch-verify/s")
	b.ReportMetric(0, "ns/op")
}

// measure times f and counts this process's heap allocations during it.
func measure(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	return d, after.Mallocs - before.Mallocs
}

// rawRoundTrip publishes benchBatch plaintext messages on a room's subject
// of the shared stream (pipelined, with acks) and reads them back with an
// ordered consumer.
func rawRoundTrip(b *testing.B, pub, sub jetstream.JetStream, room string, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	subj := subjects.Shared(room, "msg")
	futures := make([]jetstream.PubAckFuture, 0, benchBatch)
	for range benchBatch {
		f, err := pub.PublishAsync(subj, payload)
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
	cons, err := sub.OrderedConsumer(ctx, subjects.SharedStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.SharedRoom(room)}, DeliverPolicy: jetstream.DeliverAllPolicy})
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
// through the SDK's verifying, decrypting Listen, as another user.
func e2eRoundTrip(b *testing.B, tx, rx *client.Client, room string, batch [][]byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids, err := tx.SendBatch(ctx, room, "", batch)
	if err != nil {
		b.Fatal(err)
	}
	last := ids[len(ids)-1]
	lctx, lcancel := context.WithCancel(ctx)
	got := 0
	err = rx.Listen(lctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) { b.Error(err) }}, func(m client.Message) {
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

// verifyCeilings measures one core's ed25519 verification rate of a
// message's signed bytes: crypto/ed25519's, and the SDK's batches of 64.
func verifyCeilings(b *testing.B, size int) (std, sdk float64) {
	id, _ := identity.Generate()
	room, _ := e2e.NewRoomID()
	key, _ := e2e.NewRoomKey(nil)
	subj := subjects.RoomTopic(room.String(), "msg")
	envs := make([]*e2e.Envelope, 64)
	for i := range envs {
		env, err := e2e.SealMessage(id, room, subj, 1, key, e2e.MsgID([8]byte{}, uint64(i+1)), uint64(i+1), make([]byte, e2e.NonceSize), make([]byte, size))
		if err != nil {
			b.Fatal(err)
		}
		envs[i] = env
	}
	const rounds = 20
	pub := id.SignPub()
	signed := append(envs[0].AAD(), envs[0].Payload...)
	start := time.Now()
	for range rounds * len(envs) {
		if !pub.Verify(signed, envs[0].Sig) {
			b.Fatal("verify")
		}
	}
	std = float64(rounds*len(envs)) / time.Since(start).Seconds()
	sk, _ := e2e.NewSenderKey(pub)
	bv := e2e.NewBatchVerifier()
	start = time.Now()
	for range rounds {
		for _, e := range envs {
			bv.Add(sk, e)
		}
		for _, err := range bv.Verify() {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	sdk = float64(rounds*len(envs)) / time.Since(start).Seconds()
	return std, sdk
}

package client_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// TestListenPipelineOrderAndForgeries checks the parallel, batching receive
// path end to end on a real membershipd: hundreds of messages, read back
// both as a catch-up (large chunks, batch verification) and live, are
// delivered exactly once each, in stream order, with their own bytes; and
// forgeries mixed among them are reported and never delivered, whatever
// batch they land in. The relay verifies no signature (receivers do), so
// the forgeries come in the two ways a message that fails reaches a
// receiver: a member sends, through the relay, an envelope she signed but
// did not seal under the room key; and one she signed under the admin's
// name, which the relay refuses (the sender header is not the publisher),
// is written straight into the room's stored subject by the internal
// identity, as anyone who can write the stream could.
func TestListenPipelineOrderAndForgeries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n0 := startNode(t)
	adm := n0.admin
	dial := func(id *identity.Identity) *client.Client { return n0.dial(ctx, t, id, nil) }
	admC := dial(adm)
	mallory, _ := identity.Generate()
	reader, _ := identity.Generate()
	for handle, id := range map[string]*identity.Identity{"mallory": mallory, "reader": reader} {
		if _, err := admC.AddUser(ctx, handle, id.SignPub().String(), client.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
	_ = dial(mallory) // publishes mallory's KEM key
	readerC := dial(reader)
	newRoom := func(name string) client.Room {
		t.Helper()
		r, err := admC.CreateRoom(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Shared {
			t.Fatalf("room %s is not in the shared stream", name)
		}
		for _, id := range []*identity.Identity{mallory, reader} {
			if err := admC.AddMember(ctx, r.ID, id.SignPub().String(), client.RoomMember); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	r := newRoom("pipeline")

	malloryNC := n0.memberConn(t, mallory)
	_, bus := n0.bus(t)
	wrongKey, _ := e2e.NewRoomKey(nil)
	forge := func(seq uint64, claimAdmin bool) {
		t.Helper()
		room := mustRoom(t, r.ID)
		nonce := make([]byte, e2e.NonceSize)
		rand.Read(nonce)
		var stream [8]byte // a fresh message id, which no de-duplication can take for a repeat
		rand.Read(stream[:])
		env, err := e2e.SealMessage(mallory, room, subjects.RoomTopic(r.ID, "msg"), 1, wrongKey, e2e.MsgID(stream, seq), seq, nonce, []byte("forged"))
		if err != nil {
			t.Fatal(err)
		}
		h := nats.Header(env.Headers())
		if !claimAdmin {
			m := &nats.Msg{Subject: subjects.Ingress(mallory.SignPub().String(), r.ID, "msg"), Header: h, Data: env.Payload}
			if ack := relay(t, malloryNC, m); ack.Error != nil || ack.Duplicate {
				t.Fatalf("the relay did not store mallory's own envelope: %+v", ack)
			}
			return
		}
		h.Set(e2e.HdrSender, adm.SignPub().String())
		m := &nats.Msg{Subject: subjects.Ingress(mallory.SignPub().String(), r.ID, "msg"), Header: h, Data: env.Payload}
		if ack := relay(t, malloryNC, m); ack.Error == nil || ack.Error.ErrCode != wire.RelayBadEnvelope {
			t.Fatalf("the relay took an envelope that names another sender than its publisher: %+v", ack)
		}
		if ack, err := bus.PublishMsg(ctx, &nats.Msg{Subject: subjects.Shared(r.ID, "msg"), Header: h, Data: env.Payload}); err != nil || ack.Duplicate {
			t.Fatalf("store the forgery: %+v %v", ack, err)
		}
	}

	// Each message's plaintext is its index, so delivery can be checked.
	const n = 700
	batch := func(from, count int) [][]byte {
		out := make([][]byte, count)
		for i := range out {
			out[i] = binary.BigEndian.AppendUint64(make([]byte, 0, 40), uint64(from+i))
			out[i] = append(out[i], make([]byte, 32)...)
		}
		return out
	}
	send := func(from, count int) {
		t.Helper()
		if _, err := admC.SendBatch(ctx, r.ID, "msg", batch(from, count)); err != nil {
			t.Fatal(err)
		}
	}
	send(0, 300)
	forge(1, true)  // signed by mallory, claims to be the admin
	forge(1, false) // mallory's own, signed, but not under the room key
	send(300, 300)
	forge(2, true)
	send(600, 100)

	check := func(name string, msgs []client.Message, errs []error) {
		t.Helper()
		if len(msgs) != n {
			t.Fatalf("%s: %d messages delivered, want %d; reported: %v", name, len(msgs), n, errs)
		}
		var lastStream uint64
		for i, m := range msgs {
			if got := binary.BigEndian.Uint64(m.Data); got != uint64(i) || m.Seq != uint64(i+1) || m.Sender != adm.SignPub().String() || m.Handle != "admin" {
				t.Fatalf("%s: message %d is #%d seq %d from %s (%s)", name, i, got, m.Seq, m.Sender, m.Handle)
			}
			if m.StreamSeq <= lastStream {
				t.Fatalf("%s: message %d has stream sequence %d after %d: out of order", name, i, m.StreamSeq, lastStream)
			}
			lastStream = m.StreamSeq
		}
		var badSig, badDecrypt int
		for _, err := range errs {
			switch {
			case errors.Is(err, e2e.ErrBadSignature):
				badSig++
			case errors.Is(err, e2e.ErrDecrypt):
				badDecrypt++
			default:
				t.Errorf("%s: unexpected report: %v", name, err)
			}
		}
		if badSig != 2 || badDecrypt != 1 {
			t.Fatalf("%s: %d bad signatures and %d undecryptable reported, want 2 and 1: %v", name, badSig, badDecrypt, errs)
		}
	}

	// Catch-up: everything is stored before the reader starts.
	listen := func(live func()) ([]client.Message, []error) {
		lctx, lcancel := context.WithTimeout(ctx, time.Minute)
		defer lcancel()
		var mu sync.Mutex
		var msgs []client.Message
		var errs []error
		done := make(chan error, 1)
		go func() {
			done <- readerC.Listen(lctx, r.ID, client.ListenOptions{FromStart: true, OnError: func(err error) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}}, func(m client.Message) {
				mu.Lock()
				msgs = append(msgs, m)
				if len(msgs) == n {
					lcancel()
				}
				mu.Unlock()
			})
		}()
		if live != nil {
			live()
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return msgs, errs
	}
	msgs, errs := listen(nil)
	check("catch-up", msgs, errs)

	// Live: a second room, the reader listening while the messages arrive.
	r = newRoom("pipeline-live")
	msgs, errs = listen(func() {
		send(0, 300)
		forge(1, true)
		forge(1, false)
		for i := 300; i < 600; i += 10 { // small batches: small chunks too
			send(i, 10)
		}
		forge(2, true)
		send(600, 100)
	})
	check("live", msgs, errs)
}

func mustRoom(t *testing.T, s string) e2e.RoomID {
	t.Helper()
	r, err := e2e.ParseRoomID(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

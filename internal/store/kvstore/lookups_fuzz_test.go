package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/testnode"
)

// FuzzLookups stores one arbitrary value in place of one record a
// per-epoch read depends on — the state record with an unsettled write,
// an epoch record, a sealed key — and runs the per-epoch lookups, the
// history reads and a rotation (which settles the unsettled write first).
// A hostile record must never make the store panic or hang; one that does
// not decode fails every lookup that reads it with store.ErrUnavailable;
// and a lookup shows a record only if the state record makes it visible.
func FuzzLookups(f *testing.F) {
	alice := strings.Repeat("a", 64)
	room := strings.Repeat("0", 31) + "1"
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const w = "0123456789abcdef"
	type rec struct {
		bucket, key string
		valid       any
		decode      func([]byte) error
	}
	records := []rec{
		{BucketMembers, room, stateRec{Epoch: 1, Members: map[string]memberRec{alice: {Role: "owner", AddedBy: alice, AddedAt: t0}},
			Unsettled: []writeRec{{ID: w, Members: []string{alice}, KeysFrom: 1, KeysTo: 1, EpochsFrom: 1, EpochsTo: 1}}}, fzDecoder[stateRec]()},
		{BucketRooms, epochKeyName(room, 1), epochRec{Epoch: 1, By: alice, Reason: "create", At: t0, Write: w}, fzDecoder[epochRec]()},
		{BucketRoomKeys, sealedKeyName(room, alice, 1), keyRec{Sealer: alice, Sealed: []byte("sealed"), Sig: []byte("sig"), Write: w}, fzDecoder[keyRec]()},
	}
	for i, r := range records {
		f.Add(uint8(i), jsonBytes(r.valid))
		f.Add(uint8(i), []byte(`{`))
	}
	f.Add(uint8(0), []byte(`{"epoch":1,"members":{"`+alice+`":{}},"unsettled":[{"id":"`+w+`","members":["`+alice+`","x.y"],"keys_from":1,"keys_to":18446744073709551615,"epochs_from":1,"epochs_to":18446744073709551615}]}`))
	f.Add(uint8(0), []byte(`{"epoch":18446744073709551615,"members":{"`+alice+`":{}}}`))
	f.Add(uint8(1), []byte(`{"epoch":2,"by":"x","reason":"rotate","settled":true}`))
	f.Add(uint8(2), []byte(`{"sealer":"x","write":"","settled":false}`))
	f.Add(uint8(2), []byte(`{"settled":"yes"}`))

	n := testnode.Start(f, "")
	nc := n.Control(f)
	ctx := context.Background()
	s, err := Open(ctx, nc, Options{Now: func() time.Time { return t0 }, LeaseTTL: time.Minute, Timeout: 300 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), NoUpgrade: true})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.users.Put(ctx, userKey(alice), jsonBytes(userRec{SignPub: alice, Handle: "alice", Role: "member", Status: "active"})); err != nil {
		f.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		f.Fatal(err)
	}
	kvs := map[string]jetstream.KeyValue{}
	for _, r := range records {
		if kvs[r.bucket], err = js.KeyValue(ctx, r.bucket); err != nil {
			f.Fatal(err)
		}
	}

	f.Fuzz(func(t *testing.T, which uint8, value []byte) {
		if len(value) > 64<<10 {
			return
		}
		// Start from the valid state: no epoch 2 records left by an
		// earlier rotation.
		if err := kvs[BucketRooms].Purge(ctx, epochKeyName(room, 2)); err != nil {
			t.Fatal(err)
		}
		if err := kvs[BucketRoomKeys].Purge(ctx, sealedKeyName(room, alice, 2)); err != nil {
			t.Fatal(err)
		}
		target := int(which) % len(records)
		for i, r := range records {
			v := jsonBytes(r.valid)
			if i == target {
				v = value
			}
			if _, err := kvs[r.bucket].Put(ctx, r.key, v); err != nil {
				t.Fatalf("put %s/%s: %v", r.bucket, r.key, err)
			}
		}
		corrupt := records[target].decode(value) != nil
		var st stateRec
		stateOK := json.Unmarshal(jsonBytes(records[0].valid), &st) == nil
		if target == 0 {
			stateOK = json.Unmarshal(value, &st) == nil
		}

		e, err := s.Epoch(ctx, room, 1)
		if corrupt && target != 2 && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Epoch read the corrupt %s and returned %+v, %v; want ErrUnavailable", records[target].key, e, err)
		}
		if err == nil {
			var er epochRec
			if !stateOK || st.Epoch < 1 || json.Unmarshal(mustGet(t, kvs[BucketRooms], epochKeyName(room, 1)), &er) != nil || !st.visible(er.Write, er.Settled) {
				t.Fatalf("Epoch showed %+v, which the state does not make visible", e)
			}
		}
		k, err := s.SealedKey(ctx, room, alice, 1)
		if target != 1 && corrupt && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("SealedKey read the corrupt %s and returned %+v, %v; want ErrUnavailable", records[target].key, k, err)
		}
		if err == nil {
			var kr keyRec
			if !stateOK || st.Epoch < 1 || json.Unmarshal(mustGet(t, kvs[BucketRoomKeys], sealedKeyName(room, alice, 1)), &kr) != nil || !st.visible(kr.Write, kr.Settled) {
				t.Fatalf("SealedKey showed %+v, which the state does not make visible", k)
			}
		}
		for name, call := range map[string]func() error{
			"Epochs":     func() error { _, err := s.Epochs(ctx, room); return err },
			"SealedKeys": func() error { _, err := s.SealedKeys(ctx, room, alice); return err },
			"Rotate": func() error {
				return s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Reason: store.EpochRotate, At: t0,
					Keys: []store.SealedKey{{Room: room, Epoch: 2, Member: alice, Sealer: alice, Sealed: []byte("s2"), Sig: []byte("g2")}}})
			},
		} {
			if err := call(); err != nil && !isStoreVerdict(err) {
				t.Fatalf("%s: %v wraps none of the store's errors", name, err)
			}
		}
	})
}

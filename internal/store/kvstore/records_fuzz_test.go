package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/testnode"
)

// fzRecord is one record of the fuzzed store: where it lives, its valid
// value, and the type a reader decodes it into.
type fzRecord struct {
	bucket, key string
	valid       any
	decode      func([]byte) error
}

func fzDecoder[T any]() func([]byte) error {
	return func(b []byte) error { var v T; return json.Unmarshal(b, &v) }
}

// FuzzRecords stores one arbitrary value in place of one record of a
// small, valid state (a user, a room with its state, a sealed key, the
// member index, a nonce) on a real embedded JetStream, and runs every read
// and the writes that read before they write. A corrupt or hostile record
// must never make the store panic, and a record that does not decode must
// fail every call that reads it with store.ErrUnavailable (the server then
// denies: fail closed), never pass as empty or absent. Beyond that, what
// the calls return agrees with the record: a member is reported only if
// the room's state names it, and a nonce recorded as live is never used
// again.
func FuzzRecords(f *testing.F) {
	alice := strings.Repeat("a", 64)
	room := strings.Repeat("0", 31) + "1"
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	records := []fzRecord{
		{BucketUsers, userKey(alice), userRec{SignPub: alice, Handle: "alice", Role: "admin", Status: "active", CreatedAt: t0, UpdatedAt: t0}, fzDecoder[userRec]()},
		{BucketUsers, handleKey("alice"), handleClaim{SignPub: alice, At: t0}, fzDecoder[handleClaim]()},
		{BucketRooms, room, roomRec{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0, MaxAge: time.Hour}, fzDecoder[roomRec]()},
		{BucketMembers, room, stateRec{Epoch: 1, Epochs: []epochRec{{Epoch: 1, By: alice, Reason: "create", At: t0}},
			Members: map[string]memberRec{alice: {Role: "owner", AddedBy: alice, AddedAt: t0}}, Writes: []string{"0123456789abcdef"}}, fzDecoder[stateRec]()},
		{BucketRoomKeys, sealedKeyName(room, alice, 1), keyRec{Sealer: alice, Sealed: []byte("sealed"), Sig: []byte("sig"), Write: "0123456789abcdef"}, fzDecoder[keyRec]()},
		{BucketRoomsByMember, alice, indexRec{Rooms: []string{room}}, fzDecoder[indexRec]()},
		{BucketNonces, nonceKey(alice, "n"), nonceRec{Expires: t0.Add(time.Hour)}, fzDecoder[nonceRec]()},
	}
	for i, r := range records {
		f.Add(uint8(i), jsonBytes(r.valid))
		f.Add(uint8(i), []byte(`{`))
	}
	f.Add(uint8(3), []byte(`null`))
	f.Add(uint8(6), []byte(`null`))
	f.Add(uint8(3), []byte(`{"epoch":1,"members":{"`+alice+`":{"role":"owner"}},"writes":["0123456789abcdef"],"lease":{"write":"x","until":"2026-11-23T12:00:00.1Z"}}`))
	f.Add(uint8(3), []byte(`{"epoch":18446744073709551615,"members":{"`+alice+`":{}},"epochs":[]}`))
	f.Add(uint8(4), []byte(`{"sealer":1}`))
	f.Add(uint8(6), []byte(`{"expires":"2027-01-01T00:00:00Z"}`))
	f.Add(uint8(0), []byte(`{"sign_pub":"`+alice+`","status":"revoked","kem_pub":"!"}`))

	n := testnode.Start(f, "")
	nc := n.Control(f)
	ctx := context.Background()
	// A short timeout: a write that finds a live lease waits for it until
	// the timeout, and the fuzzer does write leases.
	s, err := Open(ctx, nc, Options{Now: func() time.Time { return t0 }, LeaseTTL: time.Minute, Timeout: 300 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
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
	// reads lists, for each call, the records it reads (by index).
	type call struct {
		name  string
		reads []int
		run   func() error
	}
	var member store.Member
	var nonceErr error
	calls := []call{
		{"GetUser", []int{0}, func() error { _, err := s.GetUser(ctx, alice); return err }},
		{"GetUserByHandle", []int{1}, func() error { _, err := s.GetUserByHandle(ctx, "alice"); return err }},
		{"ListUsers", []int{0}, func() error { _, err := s.ListUsers(ctx); return err }},
		{"CountActiveAdmins", []int{0}, func() error { _, err := s.CountActiveAdmins(ctx); return err }},
		{"GetRoom", []int{3}, func() error { _, err := s.GetRoom(ctx, room); return err }},
		{"RoomIDs", []int{5}, func() error { _, err := s.RoomIDs(ctx, alice); return err }},
		{"ListRooms", []int{5}, func() error { _, err := s.ListRooms(ctx, alice); return err }},
		{"ListMembers", []int{3}, func() error { _, err := s.ListMembers(ctx, room); return err }},
		{"GetMember", []int{3}, func() error { var err error; member, err = s.GetMember(ctx, room, alice); return err }},
		{"SealedKeys", []int{3}, func() error { _, err := s.SealedKeys(ctx, room, alice); return err }},
		{"Epochs", []int{3}, func() error { _, err := s.Epochs(ctx, room); return err }},
		{"UseNonce", []int{6}, func() error { nonceErr = s.UseNonce(ctx, alice, "n", t0, t0.Add(time.Hour)); return nonceErr }},
		{"SetKEMKey", []int{0}, func() error { return s.SetKEMKey(ctx, alice, []byte("kem"), []byte("sig"), t0) }},
		{"RevokeUser", []int{0}, func() error { _, err := s.RevokeUser(ctx, alice, t0); return err }},
		{"Rotate", []int{3}, func() error {
			return s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Reason: store.EpochRotate, At: t0,
				Keys: []store.SealedKey{{Room: room, Epoch: 2, Member: alice, Sealer: alice, Sealed: []byte("s2"), Sig: []byte("g2")}}})
		}},
	}
	put := func(r fzRecord, v []byte) error {
		_, err := kvs[r.bucket].Put(ctx, r.key, v)
		return err
	}

	f.Fuzz(func(t *testing.T, which uint8, value []byte) {
		if len(value) > 64<<10 {
			return
		}
		target := int(which) % len(records)
		for i, r := range records {
			v := jsonBytes(r.valid)
			if i == target {
				v = value
			}
			if err := put(r, v); err != nil {
				t.Fatalf("put %s/%s: %v", r.bucket, r.key, err)
			}
		}
		corrupt := records[target].decode(value) != nil
		for _, c := range calls {
			err := c.run()
			if corrupt && slices.Contains(c.reads, target) && !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("%s read the corrupt %s/%s %q and returned %v, not ErrUnavailable",
					c.name, records[target].bucket, records[target].key, value, err)
			}
			if err != nil && !isStoreVerdict(err) {
				t.Fatalf("%s: %v wraps none of the store's errors", c.name, err)
			}
			if c.name == "GetMember" && err == nil {
				var st stateRec
				if json.Unmarshal(mustGet(t, kvs[BucketMembers], room), &st) != nil || st.Epoch == 0 {
					t.Fatalf("GetMember found %+v in a room whose state is %q", member, value)
				}
				if _, ok := st.Members[alice]; !ok {
					t.Fatalf("GetMember found %+v, the room's state does not name it", member)
				}
			}
		}
		if target == 6 && !corrupt {
			var nr nonceRec
			if json.Unmarshal(value, &nr) == nil && t0.Before(nr.Expires) && nonceErr == nil {
				t.Fatalf("a nonce recorded until %v was used again at %v", nr.Expires, t0)
			}
		}
	})
}

func mustGet(t *testing.T, kv jetstream.KeyValue, key string) []byte {
	t.Helper()
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Value()
}

// isStoreVerdict reports whether err wraps one of the store's sentinels.
func isStoreVerdict(err error) bool {
	for _, v := range []error{store.ErrNotFound, store.ErrAlreadyRegistered, store.ErrHandleTaken, store.ErrRoomExists,
		store.ErrAlreadyMember, store.ErrNotMember, store.ErrReplay, store.ErrStaleEpoch, store.ErrIncompleteRotation,
		store.ErrRevoked, store.ErrUnavailable, errInvalid} {
		if errors.Is(err, v) {
			return true
		}
	}
	return false
}

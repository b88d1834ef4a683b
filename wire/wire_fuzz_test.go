package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bodies returns a new value of every JSON body of the API, as both the
// server and the client decode them.
func bodies() []any {
	return []any{
		new(Error), new(User), new(AddUserRequest), new(KEMKeyRequest), new(SealedKey),
		new(CreateRoomRequest), new(Room), new(Member), new(Epoch), new(RoomInfo), new(RoomList),
		new(UserList), new(AddMemberRequest), new(RotateRequest), new(Keys), new(Health),
		new(Blob), new(BlobAnnouncement),
	}
}

// FuzzBodies decodes arbitrary JSON as every body type. Whatever decodes
// must encode again (a client prints what a server sent it with --json),
// except a time with a zone offset of 24 hours or more, which time.Time
// decodes but cannot encode; and encoding is stable: decoding the encoding
// and encoding again gives the same bytes.
func FuzzBodies(f *testing.F) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range []any{
		Error{ErrorBody{CodeReplay, "nonce already used"}},
		RoomInfo{Room: Room{ID: "00112233445566778899aabbccddeeff", Name: "ops", CreatedAt: t0, Epoch: 2},
			Members: []Member{{SignPub: "ab", Handle: "alice", Role: "owner", Status: "active", KEMPub: []byte{1}, KEMSig: []byte{2}}},
			Epochs:  []Epoch{{Epoch: 1, CreatedBy: "ab", Reason: "create", CreatedAt: t0.Add(time.Hour)}}},
		Keys{Room: "r", Epoch: 1, Keys: []SealedKey{{Room: "r", Epoch: 1, Member: "m", Sealer: "s", Sealed: []byte("x"), Sig: []byte("y")}}},
		UserList{Users: []User{{SignPub: "ab", Handle: "h", Role: "admin", Status: "revoked", CreatedAt: t0}}},
		Health{Status: "ok", Node: "n1", Version: "v", Posture: Posture{BusAuth: "enforce", ACL: true, KVReplicas: 3, Peers: 3}},
		BlobAnnouncement{Type: "unibus.blob", ID: "ff", Key: make([]byte, 32), Name: "a.txt", Size: 5},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"created_at":"2026-01-01T00:00:00.123456789+23:59"}`))
	f.Add([]byte(`{"created_at":"0000-01-01T00:00:00Z","epoch":18446744073709551615}`))
	f.Add([]byte(`{"created_at":"2026-01-01T00:00:00+24:00"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range bodies() {
			if json.Unmarshal(data, v) != nil {
				continue
			}
			b1, err := json.Marshal(v)
			if err != nil {
				// time.Time decodes a zone offset of 24 hours or more
				// ("+24:00") that it then refuses to encode; only that
				// is tolerated.
				if strings.Contains(err.Error(), "timezone hour outside of range") {
					continue
				}
				t.Fatalf("%T: decoded %q, which does not encode: %v", v, data, err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := json.Unmarshal(b1, again); err != nil {
				t.Fatalf("%T: the encoding %s does not decode: %v", v, b1, err)
			}
			b2, err := json.Marshal(again)
			if err != nil || !bytes.Equal(b1, b2) {
				t.Fatalf("%T: encoding is not stable: %s then %s (%v)", v, b1, b2, err)
			}
		}
	})
}

package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

// requestBodies returns a new value of every JSON request body the API
// decodes, keyed by endpoint.
func requestBodies() map[string]any {
	return map[string]any{
		"PUT /v1/me/kem-key":                 new(wire.KEMKeyRequest),
		"POST /v1/users":                     new(wire.AddUserRequest),
		"POST /v1/rooms":                     new(wire.CreateRoomRequest),
		"POST /v1/rooms/{room}/members":      new(wire.AddMemberRequest),
		"POST /v1/rooms/{room}/rotate":       new(wire.RotateRequest),
		"DELETE /v1/rooms/{room}/members/{}": new(wire.RotateRequest),
	}
}

// sealedVector is a sealed key of ../../e2e/testdata/vectors.json.
type sealedVector struct {
	SealerSeed string `json:"sealer_seed"`
	MemberSeed string `json:"member_seed"`
	Room       string `json:"room"`
	Epoch      uint64 `json:"epoch"`
	Sealed     string `json:"sealed"`
	Sig        string `json:"sig"`
}

// sealedVectors returns the sealed-key vectors as the wire carries them,
// and the sealer's identity.
func sealedVectors(tb testing.TB) ([]wire.SealedKey, *identity.Identity) {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "e2e", "testdata", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var vf struct {
		SealedKeys []sealedVector `json:"sealed_keys"`
	}
	if err := json.Unmarshal(raw, &vf); err != nil {
		tb.Fatal(err)
	}
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	var sealer *identity.Identity
	var out []wire.SealedKey
	for _, v := range vf.SealedKeys {
		s, err := identity.FromSeed(unhex(v.SealerSeed))
		if err != nil {
			tb.Fatal(err)
		}
		m, err := identity.FromSeed(unhex(v.MemberSeed))
		if err != nil {
			tb.Fatal(err)
		}
		if sealer != nil && s.SignPub() != sealer.SignPub() {
			tb.Fatal("the sealed vectors no longer share one sealer")
		}
		sealer = s
		out = append(out, wire.SealedKey{Room: v.Room, Epoch: v.Epoch, Member: m.SignPub().String(),
			Sealer: s.SignPub().String(), Sealed: unhex(v.Sealed), Sig: unhex(v.Sig)})
	}
	if len(out) == 0 {
		tb.Fatal("no sealed vectors")
	}
	return out, sealer
}

// FuzzDecodeBodies decodes arbitrary bytes as every request body the API
// accepts. A refusal is a 400 with code bad_json or unknown_field; what is
// accepted is a single JSON value (nothing trails it) whose re-encoding
// decodes to the same request.
func FuzzDecodeBodies(f *testing.F) {
	keys, _ := sealedVectors(f)
	for _, v := range []any{
		wire.AddUserRequest{Handle: "alice", SignPub: keys[0].Member, Role: "member"},
		wire.KEMKeyRequest{KEMPub: []byte{1, 2, 3}, Sig: []byte{4}},
		wire.CreateRoomRequest{ID: keys[0].Room, Name: "ops", Key: keys[0], MaxAgeSeconds: 60, MaxBytes: 1 << 20},
		wire.AddMemberRequest{Member: "bob", Role: "owner", Keys: keys},
		wire.RotateRequest{Epoch: 2, Keys: keys[1:]},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"epoch":2,"keys":[{"room":"x","epoch":2,"EPOCH":3}]} `))
	f.Add([]byte(`{"handle":"a","handle":"b"}`))
	f.Add([]byte(`{"kem_pub":"AA=="} {}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for endpoint, v := range requestBodies() {
			err := decode(body, v)
			if err != nil {
				var ae *apiError
				if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || (ae.code != wire.CodeBadJSON && ae.code != wire.CodeUnknownField) {
					t.Fatalf("%s: refusal is not a 400 bad_json/unknown_field: %v", endpoint, err)
				}
				continue
			}
			if !json.Valid(body) {
				t.Fatalf("%s: accepted %q, which is not one JSON value", endpoint, body)
			}
			re, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%s: accepted body does not re-encode: %v", endpoint, err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := decode(re, again); err != nil {
				t.Fatalf("%s: the re-encoding %s is refused: %v", endpoint, re, err)
			}
			if !reflect.DeepEqual(v, again) {
				t.Fatalf("%s: %q decodes to %+v, its re-encoding to %+v", endpoint, body, v, again)
			}
		}
	})
}

// FuzzSealedKeys runs the server's check of client-supplied sealed keys
// (a rotation body) with the vectors' sealer as the caller. A refusal is
// a 400; accepted keys are exactly the request's, each for the room and
// epoch of the request, sealed by the caller, with a signature that
// verifies — which, for keys nobody but the sealer could sign, means the
// vectors themselves.
func FuzzSealedKeys(f *testing.F) {
	keys, sealer := sealedVectors(f)
	room := keys[0].Room
	for i, k := range keys {
		b, _ := json.Marshal(wire.RotateRequest{Epoch: k.Epoch, Keys: keys[i : i+1]})
		f.Add(room, b)
	}
	b, _ := json.Marshal(wire.RotateRequest{Epoch: 1, Keys: keys})
	f.Add(room, b)
	f.Add("00112233445566778899aabbccddeeff", []byte(`{"epoch":1,"keys":[{"room":"00112233445566778899aabbccddeeff","epoch":1}]}`))
	c := &caller{key: sealer.SignPub(), user: store.User{SignPub: sealer.SignPub().String(), Role: store.RoleMember, Status: store.StatusActive}}
	f.Fuzz(func(t *testing.T, roomText string, body []byte) {
		id, err := e2e.ParseRoomID(roomText)
		if err != nil {
			return
		}
		var req wire.RotateRequest
		if decode(body, &req) != nil {
			return
		}
		out, err := sealedKeys(c, id, req.Epoch, req.Keys)
		if err != nil {
			if ae := classify(err); ae.status != http.StatusBadRequest {
				t.Fatalf("refusal is not a 400: %v", err)
			}
			return
		}
		if len(out) != len(req.Keys) {
			t.Fatalf("%d keys in, %d out", len(req.Keys), len(out))
		}
		for i, k := range out {
			in := req.Keys[i]
			if k.Room != id.String() || k.Epoch != req.Epoch || k.Sealer != c.user.SignPub || k.Member != in.Member ||
				!bytes.Equal(k.Sealed, in.Sealed) || !bytes.Equal(k.Sig, in.Sig) {
				t.Fatalf("key %d stored as %+v from %+v", i, k, in)
			}
			member, err := identity.ParseSignPub(k.Member)
			if err != nil {
				t.Fatalf("key %d: accepted member %q: %v", i, k.Member, err)
			}
			ek := e2e.SealedKey{Room: id, Epoch: k.Epoch, Member: member, Sealer: sealer.SignPub(), Sealed: k.Sealed, Sig: k.Sig}
			if err := ek.VerifySig(); err != nil {
				t.Fatalf("key %d: accepted with a signature that fails: %v", i, err)
			}
			if !isVector(k, keys) {
				t.Fatalf("key %d: accepted a key the sealer never signed: %+v", i, k)
			}
		}
	})
}

func isVector(k store.SealedKey, keys []wire.SealedKey) bool {
	for _, v := range keys {
		if k.Room == v.Room && k.Epoch == v.Epoch && k.Member == v.Member && k.Sealer == v.Sealer &&
			bytes.Equal(k.Sealed, v.Sealed) && bytes.Equal(k.Sig, v.Sig) {
			return true
		}
	}
	return false
}

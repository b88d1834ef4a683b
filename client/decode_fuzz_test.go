package client

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// fzVectors is what the client's fuzz targets use of
// ../e2e/testdata/vectors.json.
type fzVectors struct {
	Identities []struct {
		Seed       string `json:"seed"`
		SignPub    string `json:"sign_pub"`
		KEMPub     string `json:"kem_pub"`
		KEMBinding string `json:"kem_binding_sig"`
	} `json:"identities"`
	SealedKeys []struct {
		SealerSeed string `json:"sealer_seed"`
		MemberSeed string `json:"member_seed"`
		Room       string `json:"room"`
		Epoch      uint64 `json:"epoch"`
		RoomKey    string `json:"room_key"`
		Sealed     string `json:"sealed"`
		Sig        string `json:"sig"`
	} `json:"sealed_keys"`
}

func fzLoadVectors(tb testing.TB) fzVectors {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "e2e", "testdata", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v fzVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		tb.Fatal(err)
	}
	if len(v.Identities) == 0 || len(v.SealedKeys) == 0 {
		tb.Fatal("vector file is missing sections")
	}
	return v
}

func fzUnhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fzUsers returns the vector identities as the server publishes them.
func fzUsers(tb testing.TB, v fzVectors) []wire.User {
	var us []wire.User
	for i, id := range v.Identities {
		us = append(us, wire.User{SignPub: id.SignPub, Handle: "user" + string(rune('a'+i)), Role: "member", Status: "active",
			KEMPub: fzUnhex(tb, id.KEMPub), KEMSig: fzUnhex(tb, id.KEMBinding)})
	}
	return us
}

// responseBodies returns a new value of every JSON answer the client
// decodes.
func responseBodies() []any {
	return []any{new(wire.User), new(wire.UserList), new(wire.Room), new(wire.RoomList), new(wire.RoomInfo),
		new(wire.Keys), new(wire.Blob), new(wire.Member)}
}

// FuzzDecodeResponse feeds arbitrary control-plane answers (status and
// body) to the client's response decoder, for every answer type. An error
// status is always an *APIError with that status, carrying the server's
// code when the body is a JSON error; a success decodes exactly when the
// body is JSON of the answer's shape, and leaves nothing decoded otherwise
// worth trusting: the caller gets the error.
func FuzzDecodeResponse(f *testing.F) {
	v := fzLoadVectors(f)
	users := fzUsers(f, v)
	for _, body := range []any{
		users[0],
		wire.UserList{Users: users},
		wire.RoomInfo{Room: wire.Room{ID: v.SealedKeys[0].Room, Name: "ops", Epoch: 2}, Members: []wire.Member{{SignPub: users[0].SignPub, Role: "owner"}}},
		wire.Keys{Room: v.SealedKeys[0].Room, Epoch: 1, Keys: []wire.SealedKey{{Room: v.SealedKeys[0].Room, Epoch: 1, Sealed: []byte{1}}}},
		wire.Error{Error: wire.ErrorBody{Code: wire.CodeReplay, Message: "replay"}},
	} {
		b, err := json.Marshal(body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint16(200), b)
		f.Add(uint16(409), b)
	}
	f.Add(uint16(502), []byte("<html>bad gateway</html>\n"))
	f.Add(uint16(204), []byte{})
	f.Fuzz(func(t *testing.T, status uint16, body []byte) {
		code := 100 + int(status)%500
		for _, out := range responseBodies() {
			resp := &http.Response{StatusCode: code, Body: io.NopCloser(bytes.NewReader(body))}
			err := decodeResponse(resp, out)
			if code >= 300 {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != code {
					t.Fatalf("status %d: got %v, want an APIError with the status", code, err)
				}
				var we wire.Error
				if json.Unmarshal(body, &we) == nil && we.Error.Code != "" {
					if ae.Code != we.Error.Code || ae.Message != we.Error.Message {
						t.Fatalf("status %d: the server's error %+v became %+v", code, we.Error, ae)
					}
				} else if ae.Code != "http" || ae.Message != strings.TrimSpace(string(body)) {
					t.Fatalf("status %d: a non-JSON error became %+v", code, ae)
				}
				continue
			}
			fresh := reflect.New(reflect.TypeOf(out).Elem()).Interface()
			jerr := json.Unmarshal(body, fresh)
			if (err == nil) != (jerr == nil) {
				t.Fatalf("%T: decodeResponse %v, but the body decodes with %v", out, err, jerr)
			}
			if err == nil && !reflect.DeepEqual(out, fresh) {
				t.Fatalf("%T: decoded %+v, want %+v", out, out, fresh)
			}
		}
	})
}

// FuzzParseBlobAnnouncement parses arbitrary room-message plaintexts as
// blob announcements. What is accepted has the blob type and a 32-byte key
// and survives re-encoding; anything else is not an announcement.
func FuzzParseBlobAnnouncement(f *testing.F) {
	for _, a := range []wire.BlobAnnouncement{
		{Type: blobType, ID: strings.Repeat("ab", 32), Key: make([]byte, 32), Name: "report.pdf", Size: 1 << 20, ContentType: "application/pdf"},
		{Type: blobType, ID: "x", Key: make([]byte, 31)},
		{Type: "unibus.other", Key: make([]byte, 32)},
	} {
		b, _ := json.Marshal(a)
		f.Add(b)
	}
	f.Add([]byte("hello, room"))
	f.Add([]byte(`{"type":"unibus.blob","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","size":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, ok := ParseBlobAnnouncement(data)
		if !ok {
			if !reflect.DeepEqual(a, BlobAnnouncement{}) {
				t.Fatalf("refused, but returned %+v", a)
			}
			return
		}
		var raw wire.BlobAnnouncement
		if json.Unmarshal(data, &raw) != nil || raw.Type != blobType || len(a.Key) != 32 {
			t.Fatalf("accepted %+v", a)
		}
		re, err := json.Marshal(a.toWire())
		if err != nil {
			t.Fatal(err)
		}
		b, ok := ParseBlobAnnouncement(re)
		if !ok || !reflect.DeepEqual(a, b) {
			t.Fatalf("the re-encoded announcement parses to %+v, %v", b, ok)
		}
	})
}

// FuzzUserLookup feeds arbitrary answers to a user lookup (by handle or
// sign-pub), as Whois, AddMember and RemoveMember check them. answerFor
// accepts only a record of the user asked for, with a well-formed sign-pub
// and handle; verifiedKEM accepts only a KEM key whose binding the
// sign-pub signed — for keys nobody else holds, a vector identity's own.
func FuzzUserLookup(f *testing.F) {
	v := fzLoadVectors(f)
	users := fzUsers(f, v)
	for i, u := range users {
		b, _ := json.Marshal(u)
		f.Add(u.Handle, b)
		f.Add(u.SignPub, b)
		other := u
		other.KEMPub = users[(i+1)%len(users)].KEMPub
		b, _ = json.Marshal(other)
		f.Add(u.Handle, b)
	}
	f.Add("Alice", []byte(`{"sign_pub":"`+users[0].SignPub+`","handle":"Alice"}`))
	f.Fuzz(func(t *testing.T, user string, body []byte) {
		var u wire.User
		if json.Unmarshal(body, &u) != nil {
			return
		}
		sp, err := answerFor(user, userFromWire(u))
		if err == nil {
			if sp.String() != u.SignPub {
				t.Fatalf("answerFor returned %s for the record of %q", sp, u.SignPub)
			}
			if _, perr := identity.ParseSignPub(user); perr == nil && u.SignPub != user {
				t.Fatalf("a lookup of %s accepted the record of %s", user, u.SignPub)
			} else if perr != nil && u.Handle != user {
				t.Fatalf("a lookup of %q accepted the record of %q", user, u.Handle)
			}
			if u.Handle != "" && !validHandle(u.Handle) {
				t.Fatalf("accepted the handle %q", u.Handle)
			}
		}
		sp, kp, err := verifiedKEM(u.SignPub, u.KEMPub, u.KEMSig)
		if err != nil {
			return
		}
		if identity.VerifyKEMBinding(sp, kp, u.KEMSig) != nil || !bytes.Equal(kp.Bytes(), u.KEMPub) {
			t.Fatal("verifiedKEM accepted a key whose binding does not verify")
		}
		for _, w := range users {
			if w.SignPub == u.SignPub && bytes.Equal(w.KEMPub, u.KEMPub) && bytes.Equal(w.KEMSig, u.KEMSig) {
				return
			}
		}
		t.Fatalf("verifiedKEM accepted a binding no vector identity signed: %s", u.SignPub)
	})
}

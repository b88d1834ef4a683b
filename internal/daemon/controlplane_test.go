package daemon_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// signed builds a request signed by key under keyID.
func signed(t *testing.T, b *bus, method, path string, body []byte, keyID string, key ed25519.PrivateKey, now func() time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, b.d.HTTPURL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	s := &httpsig.Signer{KeyID: keyID, Key: key, Now: now, Tag: b.d.DeploymentTag(context.Background())}
	if err := s.Sign(req, body); err != nil {
		t.Fatal(err)
	}
	return req
}

func send(t *testing.T, req *http.Request, body []byte) (int, wire.ErrorBody) {
	t.Helper()
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e wire.Error
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error
}

func userCount(t *testing.T, b *bus) int {
	t.Helper()
	us, err := b.d.Store().ListUsers(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return len(us)
}

// TestSignedRequestAttacks: every attack on the request signature is
// refused with its precise status, and the state-changing request it
// carried (adding a user) has no effect.
func TestSignedRequestAttacks(t *testing.T) { forEachStore(t, testSignedRequestAttacks) }

func testSignedRequestAttacks(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	adminKey := b.adm.SigningKey()
	adminID := b.adm.SignPub().String()
	stranger, _ := identity.Generate()
	newUser := func() []byte {
		id, _ := identity.Generate()
		body, _ := json.Marshal(wire.AddUserRequest{Handle: "victim-" + id.SignPub().Short(), SignPub: id.SignPub().String(), Role: "admin"})
		return body
	}
	before := userCount(t, b)

	t.Run("replay", func(t *testing.T) {
		body := newUser()
		req := signed(t, b, "POST", "/v1/users", body, adminID, adminKey, nil)
		replay := req.Clone(req.Context())
		if code, e := send(t, req, body); code != http.StatusCreated {
			t.Fatalf("original: %d %+v", code, e)
		}
		if code, e := send(t, replay, body); code != http.StatusConflict || e.Code != wire.CodeReplay {
			t.Fatalf("replay: %d %+v", code, e)
		}
		before++ // the original was legitimate
	})
	cases := []struct {
		name   string
		req    func(body []byte) (*http.Request, []byte)
		status int
		code   string
	}{
		{"created too old", func(body []byte) (*http.Request, []byte) {
			return signed(t, b, "POST", "/v1/users", body, adminID, adminKey, func() time.Time { return time.Now().Add(-61 * time.Second) }), body
		}, 401, wire.CodeStaleSignature},
		{"created in the future", func(body []byte) (*http.Request, []byte) {
			return signed(t, b, "POST", "/v1/users", body, adminID, adminKey, func() time.Time { return time.Now().Add(90 * time.Second) }), body
		}, 401, wire.CodeStaleSignature},
		{"signed by another key under the admin's keyid", func(body []byte) (*http.Request, []byte) {
			return signed(t, b, "POST", "/v1/users", body, adminID, stranger.SigningKey(), nil), body
		}, 401, wire.CodeBadSignature},
		{"unknown key", func(body []byte) (*http.Request, []byte) {
			return signed(t, b, "POST", "/v1/users", body, stranger.SignPub().String(), stranger.SigningKey(), nil), body
		}, 401, wire.CodeUnknownKey},
		{"signature bytes flipped", func(body []byte) (*http.Request, []byte) {
			r := signed(t, b, "POST", "/v1/users", body, adminID, adminKey, nil)
			sig := r.Header.Get("Signature")
			i := strings.Index(sig, ":") + 5
			c := byte('A')
			if sig[i] == 'A' {
				c = 'B'
			}
			r.Header.Set("Signature", sig[:i]+string(c)+sig[i+1:])
			return r, body
		}, 401, wire.CodeBadSignature},
		{"body swapped after signing", func(body []byte) (*http.Request, []byte) {
			return signed(t, b, "POST", "/v1/users", body, adminID, adminKey, nil), newUser()
		}, 401, wire.CodeBadDigest},
		{"path changed after signing", func(body []byte) (*http.Request, []byte) {
			r := signed(t, b, "POST", "/v1/users", body, adminID, adminKey, nil)
			r.URL.Path = "/v1/rooms"
			return r, body
		}, 401, wire.CodeBadSignature},
		{"no signature", func(body []byte) (*http.Request, []byte) {
			r, _ := http.NewRequest("POST", b.d.HTTPURL()+"/v1/users", bytes.NewReader(body))
			return r, body
		}, 401, wire.CodeUnauthorized},
		{"content-digest not covered", func(body []byte) (*http.Request, []byte) {
			r := signed(t, b, "POST", "/v1/users", nil, adminID, adminKey, nil)
			r.Header.Set("Content-Digest", httpsig.ContentDigest(body))
			return r, body
		}, 401, wire.CodeUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, body := tc.req(newUser())
			code, e := send(t, req, body)
			if code != tc.status || e.Code != tc.code {
				t.Fatalf("got %d %+v, want %d %s", code, e, tc.status, tc.code)
			}
			if strings.Contains(e.Message, req.Header.Get("Signature")) && req.Header.Get("Signature") != "" {
				t.Fatal("error message echoes the signature")
			}
		})
	}
	if after := userCount(t, b); after != before {
		t.Fatalf("users went from %d to %d: an attack changed state", before, after)
	}
	// Denials are counted for monitoring.
	resp, err := http.Get(b.d.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`unibus_http_denials_total{reason="replay"} 1`, `unibus_http_denials_total{reason="bad_signature"} 3`, "unibus_http_replays_total 1"} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestBadInput: malformed or invalid bodies get precise 4xx answers and the
// store is unchanged.
func TestBadInput(t *testing.T) { forEachStore(t, testBadInput) }

func testBadInput(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	adminKey := b.adm.SigningKey()
	adminID := b.adm.SignPub().String()
	ok, _ := identity.Generate()
	okPub := ok.SignPub().String()
	before := userCount(t, b)
	cases := []struct {
		name, method, path string
		body               string
		status             int
		code               string
	}{
		{"malformed JSON", "POST", "/v1/users", `{"handle": "x",`, 400, wire.CodeBadJSON},
		{"not an object", "POST", "/v1/users", `[1,2]`, 400, wire.CodeBadJSON},
		{"trailing data", "POST", "/v1/users", `{"handle":"a","sign_pub":"` + okPub + `","role":"member"} {}`, 400, wire.CodeBadJSON},
		{"unknown field", "POST", "/v1/users", `{"handle":"a","sign_pub":"` + okPub + `","role":"member","is_root":true}`, 400, wire.CodeUnknownField},
		{"wrong type", "POST", "/v1/users", `{"handle":7}`, 400, wire.CodeBadJSON},
		{"empty body", "POST", "/v1/users", ``, 400, wire.CodeBadJSON},
		{"invalid hex key", "POST", "/v1/users", `{"handle":"a","sign_pub":"zz` + okPub[2:] + `","role":"member"}`, 400, wire.CodeBadRequest},
		{"short key", "POST", "/v1/users", `{"handle":"a","sign_pub":"abcd","role":"member"}`, 400, wire.CodeBadRequest},
		{"uppercase handle", "POST", "/v1/users", `{"handle":"Alice","sign_pub":"` + okPub + `","role":"member"}`, 400, wire.CodeBadRequest},
		{"handle too long", "POST", "/v1/users", `{"handle":"` + strings.Repeat("a", 64) + `","sign_pub":"` + okPub + `","role":"member"}`, 400, wire.CodeBadRequest},
		{"bad role", "POST", "/v1/users", `{"handle":"a","sign_pub":"` + okPub + `","role":"root"}`, 400, wire.CodeBadRequest},
		{"oversized body", "POST", "/v1/users", `{"handle":"` + strings.Repeat("a", 1<<20) + `"}`, 413, wire.CodeTooLarge},
		{"truncated KEM key", "PUT", "/v1/me/kem-key", `{"kem_pub":"AAAA","sig":"AAAA"}`, 400, wire.CodeBadRequest},
		{"truncated sealed key", "POST", "/v1/rooms", `{"id":"00112233445566778899aabbccddeeff","name":"x","key":{"room":"00112233445566778899aabbccddeeff","epoch":1,"member":"` + adminID + `","sealer":"` + adminID + `","sealed":"AAAA","sig":"AAAA"}}`, 400, wire.CodeBadRequest},
		{"bad room id", "POST", "/v1/rooms", `{"id":"../../etc","name":"x","key":{}}`, 400, wire.CodeBadRequest},
		{"bad room id in path", "GET", "/v1/rooms/XYZ", ``, 400, wire.CodeBadRequest},
		{"unknown endpoint", "GET", "/v1/nope", ``, 404, wire.CodeNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			code, e := send(t, signed(t, b, tc.method, tc.path, body, adminID, adminKey, nil), body)
			if code != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", code, e, tc.status, tc.code)
			}
		})
	}
	if after := userCount(t, b); after != before {
		t.Fatalf("bad input changed the users: %d -> %d", before, after)
	}
	rooms, err := b.d.Store().ListRooms(ctxT(t), adminID)
	if err != nil || len(rooms) != 0 {
		t.Fatalf("bad input created rooms: %v %v", rooms, err)
	}
}

// TestAuthorization: who may do what on the control plane.
func TestAuthorization(t *testing.T) { forEachStore(t, testAuthorization) }

func testAuthorization(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	_, bob := b.user(t, "bob")
	_, carol := b.user(t, "carol")
	room, err := alice.CreateRoom(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddUser(ctx, "eve", strings.Repeat("ab", 32), "admin"); !isStatus(err, 403) {
		t.Errorf("member added a user: %v", err)
	}
	if _, err := bob.ListUsers(ctx); !isStatus(err, 403) {
		t.Errorf("member listed users: %v", err)
	}
	if err := bob.AddMember(ctx, room.ID, "carol", "member"); err == nil {
		t.Error("plain member added a member")
	}
	if err := bob.Rotate(ctx, room.ID); !isStatus(err, 403) {
		t.Errorf("plain member rotated without a pending rotation: %v", err)
	}
	if _, err := carol.RoomInfo(ctx, room.ID); !isStatus(err, 404) {
		t.Errorf("non-member read the room: %v", err)
	}
	if err := carol.RemoveMember(ctx, room.ID, "bob"); err == nil {
		t.Error("non-member removed a member")
	}
	// A user without a published KEM key cannot be added (409).
	noKEM, _ := identity.Generate()
	if _, err := b.admin.AddUser(ctx, "nokem", noKEM.SignPub().String(), "member"); err != nil {
		t.Fatal(err)
	}
	// The SDK refuses locally (it has no key to seal to); the server
	// refuses too, with 409, whatever the client sends.
	if err := alice.AddMember(ctx, room.ID, "nokem", "member"); err == nil || !strings.Contains(err.Error(), "KEM key") {
		t.Errorf("SDK added a user without a KEM key: %v", err)
	}
	body, _ := json.Marshal(wire.AddMemberRequest{Member: "nokem", Role: "member"})
	aliceID := alice.Identity()
	code, e := send(t, signed(t, b, "POST", "/v1/rooms/"+room.ID+"/members", body, aliceID.SignPub().String(), aliceID.SigningKey(), nil), body)
	if code != 409 || e.Code != wire.CodeNoKEMKey || !strings.Contains(e.Message, "KEM key") {
		t.Errorf("server added a user without a KEM key: %d %+v", code, e)
	}
	// An admin who is not a member removes bob without keys: the room is
	// rotation-pending, and alice's next send rotates first. (The SDK
	// re-reads room state when its cache is older than RoomCacheTTL, 2 s by
	// default; a client with a fresh view sees the pending rotation at once.)
	alice = b.dial(t, alice.Identity())
	if err := b.admin.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	ri, _ := alice.RoomInfo(ctx, room.ID)
	if !ri.Room.RotationPending {
		t.Fatal("admin removal did not mark the room rotation-pending")
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ri, _ = alice.RoomInfo(ctx, room.ID)
	if ri.Room.RotationPending || ri.Room.Epoch != 2 {
		t.Fatalf("send did not rotate first: %+v", ri.Room)
	}
}

func isStatus(err error, status int) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status == status
}

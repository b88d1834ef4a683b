package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// fzServer answers the two requests of Client.state with fixed bodies.
type fzServer struct{ info, keys []byte }

func (s *fzServer) RoundTrip(r *http.Request) (*http.Response, error) {
	body := s.info
	if strings.HasSuffix(r.URL.Path, "/keys") {
		body = s.keys
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), Request: r}, nil
}

// FuzzRoomState gives the client arbitrary answers for a room's info
// (members, roles, epochs) and its sealed keys — what a hostile or broken
// server could send — and builds the room state from them, as every send
// and listen does. The client is the member of the sealed-key vectors. It
// must never panic, and:
//
//   - a key is accepted only as the acceptance rule allows it: sealed to
//     the client, for the room, by the client itself, an owner in the
//     member list, or the creator of that epoch;
//   - every accepted key is the vectors' room key (nobody else can sign
//     for their sealer);
//   - pins are taken only of well-formed handles and of KEM keys whose
//     binding their sign-pub signed (the vector identities').
func FuzzRoomState(f *testing.F) {
	v := fzLoadVectors(f)
	sk0 := v.SealedKeys[0]
	sealer, err := identity.FromSeed(fzUnhex(f, sk0.SealerSeed))
	if err != nil {
		f.Fatal(err)
	}
	me, err := identity.FromSeed(fzUnhex(f, sk0.MemberSeed))
	if err != nil {
		f.Fatal(err)
	}
	roomKey := fzUnhex(f, sk0.RoomKey)
	room := sk0.Room
	var keys []wire.SealedKey
	for _, sk := range v.SealedKeys {
		if sk.Room != room || sk.SealerSeed != sk0.SealerSeed || sk.MemberSeed != sk0.MemberSeed || sk.RoomKey != sk0.RoomKey {
			f.Fatal("the sealed vectors no longer share one room, sealer, member and key")
		}
		keys = append(keys, wire.SealedKey{Room: sk.Room, Epoch: sk.Epoch, Member: me.SignPub().String(),
			Sealer: sealer.SignPub().String(), Sealed: fzUnhex(f, sk.Sealed), Sig: fzUnhex(f, sk.Sig)})
	}
	users := fzUsers(f, v)
	member := func(u wire.User, role string) wire.Member {
		return wire.Member{SignPub: u.SignPub, Handle: u.Handle, Role: role, Status: u.Status, KEMPub: u.KEMPub, KEMSig: u.KEMSig}
	}
	if users[0].SignPub != sealer.SignPub().String() || users[1].SignPub != me.SignPub().String() {
		f.Fatal("the identity vectors are no longer the sealer then the member")
	}
	epochs := []wire.Epoch{{Epoch: 1, CreatedBy: users[0].SignPub, Reason: "create"}, {Epoch: 2, CreatedBy: users[0].SignPub, Reason: "rotate"}}
	ks, _ := json.Marshal(wire.Keys{Room: room, Epoch: 2, Keys: keys})
	for _, info := range []wire.RoomInfo{
		{Room: wire.Room{ID: room, Epoch: 2}, Members: []wire.Member{member(users[0], "owner"), member(users[1], "member")}, Epochs: epochs},
		{Room: wire.Room{ID: room, Epoch: 2}, Members: []wire.Member{member(users[0], "member"), member(users[1], "member")}, Epochs: epochs},
		{Room: wire.Room{ID: room, Epoch: 2}, Members: []wire.Member{member(users[1], "owner"), member(users[2], "owner")}, Epochs: epochs[1:]},
	} {
		b, _ := json.Marshal(info)
		f.Add(b, ks)
	}
	f.Add([]byte(`{"room":{"id":"`+room+`"},"members":[{"sign_pub":"`+users[0].SignPub+`","handle":"Bad Handle","role":"owner","kem_pub":"AA=="}]}`), ks)

	// A fresh client (no cached state, no pins) per input.
	state := func(infoBody, keysBody []byte) (*Client, *roomState, error) {
		c := &Client{
			cfg: Config{Servers: []string{"http://unibus.invalid"}, RoomCacheTTL: time.Hour},
			id:  me, log: slog.New(slog.DiscardHandler),
			http:   &http.Client{Transport: &fzServer{infoBody, keysBody}},
			signer: &httpsig.Signer{KeyID: me.SignPub().String(), Key: me.SigningKey()},
			pins:   &knownKeys{handles: map[string]string{}, kems: map[string]string{}, warned: map[string]struct{}{}},
			rooms:  map[string]*roomState{},
		}
		st, err := c.state(context.Background(), room, true)
		return c, st, err
	}
	// The first seed must get every key accepted, or the fuzzer starts
	// from nothing.
	first, _ := json.Marshal(wire.RoomInfo{Room: wire.Room{ID: room, Epoch: 2}, Members: []wire.Member{member(users[0], "owner"), member(users[1], "member")}, Epochs: epochs})
	if c, st, err := state(first, ks); err != nil || len(st.keys) != len(keys) || len(c.pins.kems) != 1 {
		f.Fatalf("the valid seed: %v", err)
	}

	f.Fuzz(func(t *testing.T, infoBody, keysBody []byte) {
		c, st, err := state(infoBody, keysBody)
		if err != nil {
			return
		}
		var info wire.RoomInfo
		var got wire.Keys
		if json.Unmarshal(infoBody, &info) != nil || json.Unmarshal(keysBody, &got) != nil {
			t.Fatal("state accepted answers that do not decode")
		}
		if st.id.String() != room {
			t.Fatalf("state of room %s has id %s", room, st.id)
		}
		for _, m := range info.Members {
			if sp, err := identity.ParseSignPub(m.SignPub); err == nil {
				if _, ok := st.members[sp]; !ok {
					t.Fatalf("member %s is missing from the state", m.SignPub)
				}
			}
		}
		for ep, k := range st.keys {
			if !bytes.Equal(k.Bytes(), roomKey) {
				t.Fatalf("epoch %d: accepted a key that is not the vectors'", ep)
			}
			if !allowedKey(me.SignPub().String(), room, ep, info, got.Keys) {
				t.Fatalf("epoch %d: accepted a key the acceptance rule refuses", ep)
			}
		}
		for h, sp := range c.pins.handles {
			if !validHandle(h) {
				t.Fatalf("pinned the handle %q", h)
			}
			if _, err := identity.ParseSignPub(sp); err != nil {
				t.Fatalf("pinned handle %q to %q", h, sp)
			}
		}
		for sp, d := range c.pins.kems {
			ok := false
			for _, u := range users {
				kp, err := identity.ParseKEMPub(u.KEMPub)
				ok = ok || (err == nil && u.SignPub == sp && kemDigest(kp) == d)
			}
			if !ok {
				t.Fatalf("pinned a KEM key for %s that it did not sign", sp)
			}
		}
	})
}

// allowedKey is the acceptance rule (docs/FORMATS.md) written out again:
// some key of the answer for epoch ep is for this room and the client, and
// its sealer is the client, an owner of the room, or the epoch's creator.
func allowedKey(me, room string, ep uint64, info wire.RoomInfo, keys []wire.SealedKey) bool {
	for _, k := range keys {
		if k.Epoch != ep || k.Room != room || k.Member != me {
			continue
		}
		if k.Sealer == me {
			return true
		}
		for _, e := range info.Epochs {
			if e.Epoch == ep && e.CreatedBy == k.Sealer {
				return true
			}
		}
		for _, m := range info.Members {
			if m.SignPub == k.Sealer && m.Role == "owner" {
				return true
			}
		}
	}
	return false
}

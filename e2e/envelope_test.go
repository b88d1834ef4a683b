package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
)

func testEnvelope(t testing.TB) (*identity.Identity, RoomID, *RoomKey, *Envelope) {
	sender, err := identity.FromSeed(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	room, _ := NewRoomID()
	key, _ := NewRoomKey(nil)
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	env, err := SealMessage(sender, room, "unibus.room."+room.String()+".chat", 3, key, MsgID([8]byte{1}, 7), 7, nonce, []byte("secret payload"))
	if err != nil {
		t.Fatal(err)
	}
	return sender, room, key, env
}

func TestEnvelopeRoundTrip(t *testing.T) {
	_, room, key, env := testEnvelope(t)
	got, err := ParseEnvelope(room, env.Subject, env.Headers(), env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.VerifySignature(); err != nil {
		t.Fatal(err)
	}
	pt, err := got.Open(key)
	if err != nil || string(pt) != "secret payload" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if got.Epoch != 3 || got.Seq != 7 || StreamOf(got.MsgID) != "0100000000000000" {
		t.Fatalf("fields: %+v", got)
	}
}

func TestEnvelopeRejects(t *testing.T) {
	_, room, key, env := testEnvelope(t)
	other, _ := NewRoomID()
	otherKey, _ := NewRoomKey(nil)
	mallory, _ := identity.Generate()
	cases := []struct {
		name    string
		room    RoomID
		subject string
		mutH    func(h map[string][]string)
		mutP    func(p []byte) []byte
		stage   string // "parse", "verify" or "open"
		want    error
	}{
		{name: "truncated payload", mutP: func(p []byte) []byte { return p[:len(p)-1] }, stage: "verify", want: ErrBadSignature},
		{name: "shorter than nonce+tag", mutP: func(p []byte) []byte { return p[:NonceSize+TagSize-1] }, stage: "parse", want: ErrPayloadTooShort},
		{name: "bit flip in ciphertext", mutP: func(p []byte) []byte { p[len(p)-3] ^= 1; return p }, stage: "verify", want: ErrBadSignature},
		{name: "bit flip in nonce", mutP: func(p []byte) []byte { p[0] ^= 0x80; return p }, stage: "verify", want: ErrBadSignature},
		{name: "other room", room: other, stage: "parse", want: ErrMalformed},
		{name: "other topic", subject: "unibus.room." + room.String() + ".other", stage: "verify", want: ErrBadSignature},
		{name: "epoch changed", mutH: func(h map[string][]string) { h[HdrEpoch] = []string{"4"} }, stage: "verify", want: ErrBadSignature},
		{name: "sender swapped", mutH: func(h map[string][]string) { h[HdrSender] = []string{mallory.SignPub().String()} }, stage: "verify", want: ErrBadSignature},
		{name: "seq changed", mutH: func(h map[string][]string) { h[HdrSeq] = []string{"8"}; h[HdrMsgID] = []string{MsgID([8]byte{1}, 8)} }, stage: "verify", want: ErrBadSignature},
		{name: "seq and msg id disagree", mutH: func(h map[string][]string) { h[HdrSeq] = []string{"8"} }, stage: "parse", want: ErrMalformed},
		{name: "version 3", mutH: func(h map[string][]string) { h[HdrVersion] = []string{"3"} }, stage: "parse", want: ErrVersion},
		{name: "version 1 (a downgrade)", mutH: func(h map[string][]string) { h[HdrVersion] = []string{"1"} }, stage: "parse", want: ErrVersion},
		{name: "send time changed", mutH: func(h map[string][]string) { h[HdrTime] = []string{"1767225600001"} }, stage: "verify", want: ErrBadSignature},
		{name: "missing send time", mutH: func(h map[string][]string) { delete(h, HdrTime) }, stage: "parse", want: ErrMalformed},
		{name: "non-canonical send time", mutH: func(h map[string][]string) { h[HdrTime] = []string{"0" + h[HdrTime][0]} }, stage: "parse", want: ErrMalformed},
		{name: "zero send time", mutH: func(h map[string][]string) { h[HdrTime] = []string{"0"} }, stage: "parse", want: ErrMalformed},
		{name: "missing sig", mutH: func(h map[string][]string) { delete(h, HdrSig) }, stage: "parse", want: ErrMalformed},
		{name: "duplicate epoch header", mutH: func(h map[string][]string) { h[HdrEpoch] = []string{"3", "3"} }, stage: "parse", want: ErrMalformed},
		{name: "non-canonical epoch", mutH: func(h map[string][]string) { h[HdrEpoch] = []string{"03"} }, stage: "parse", want: ErrMalformed},
		{name: "zero epoch", mutH: func(h map[string][]string) { h[HdrEpoch] = []string{"0"} }, stage: "parse", want: ErrMalformed},
		{name: "uppercase sender", mutH: func(h map[string][]string) {
			h[HdrSender] = []string{string(bytes.ToUpper([]byte(h[HdrSender][0])))}
		}, stage: "parse", want: ErrMalformed},
		{name: "bad sig encoding", mutH: func(h map[string][]string) { h[HdrSig] = []string{"!!"} }, stage: "parse", want: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := maps.Clone(env.Headers())
			p := bytes.Clone(env.Payload)
			r, subj := room, env.Subject
			if tc.room != (RoomID{}) {
				r = tc.room
			}
			if tc.subject != "" {
				subj = tc.subject
			}
			if tc.mutH != nil {
				tc.mutH(h)
			}
			if tc.mutP != nil {
				p = tc.mutP(p)
			}
			got, err := ParseEnvelope(r, subj, h, p)
			if tc.stage == "parse" {
				if !errors.Is(err, tc.want) {
					t.Fatalf("parse: got %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			err = got.VerifySignature()
			if tc.stage == "verify" {
				if !errors.Is(err, tc.want) {
					t.Fatalf("verify: got %v, want %v", err, tc.want)
				}
				// Even skipping the signature, decryption must refuse the change.
				if _, err := got.Open(key); err == nil && tc.mutP != nil {
					t.Fatal("tampered payload decrypted")
				}
				return
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		if _, err := env.Open(otherKey); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestSealedKeyRejects(t *testing.T) {
	owner, _ := identity.Generate()
	member, _ := identity.Generate()
	other, _ := identity.Generate()
	room, _ := NewRoomID()
	key, _ := NewRoomKey(nil)
	sk, err := SealRoomKey(owner, room, 1, member.SignPub(), member.KEMPub(), key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenRoomKey(member, sk); err != nil || !bytes.Equal(got.Bytes(), key.Bytes()) {
		t.Fatalf("open: %v", err)
	}
	if _, err := OpenRoomKey(other, sk); !errors.Is(err, ErrWrongRecipient) {
		t.Fatalf("other member: %v", err)
	}
	bad := sk
	bad.Sealed = bytes.Clone(sk.Sealed)
	bad.Sealed[10] ^= 1
	if _, err := OpenRoomKey(member, bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("flipped sealed: %v", err)
	}
	// A forged signature by a non-sealer over flipped bytes still fails to open.
	bad.Sealer = other.SignPub()
	bad.Sig = other.Sign(SealedKeySigMessage(bad.Room, bad.Epoch, bad.Member, bad.Sealed))
	if _, err := OpenRoomKey(member, bad); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("re-signed flipped sealed: %v", err)
	}
	trunc := sk
	trunc.Sealed = sk.Sealed[:len(sk.Sealed)-1]
	if _, err := OpenRoomKey(member, trunc); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
	// Moving a sealed key to another room fails the signature.
	moved := sk
	moved.Room = RoomID{1}
	if _, err := OpenRoomKey(member, moved); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("moved: %v", err)
	}
	if _, err := SealRoomKey(owner, room, 1, member.SignPub(), identity.KEMPub{}, key); err == nil {
		t.Fatal("sealed to a member without a KEM key")
	}
}

func TestRoomID(t *testing.T) {
	r, _ := NewRoomID()
	if p, err := ParseRoomID(r.String()); err != nil || p != r {
		t.Fatal(err)
	}
	for _, s := range []string{"", "00", "00112233445566778899AABBCCDDEEFF", "00112233445566778899aabbccddeeffaa", "g0112233445566778899aabbccddeeff"} {
		if _, err := ParseRoomID(s); !errors.Is(err, ErrBadRoomID) {
			t.Errorf("%q accepted", s)
		}
	}
	k, _ := NewRoomKey(nil)
	if s := k.String(); bytes.Contains([]byte(s), k.Bytes()) || s != "roomkey(redacted)" {
		t.Fatal("room key prints")
	}
}

func FuzzParseEnvelope(f *testing.F) {
	_, room, key, env := testEnvelope(f)
	h := env.Headers()
	f.Add(env.Subject, h[HdrVersion][0], h[HdrEpoch][0], h[HdrSender][0], h[HdrSeq][0], h[HdrMsgID][0], h[HdrSig][0], env.Payload)
	f.Add("unibus.room.x", "1", "1", "", "1", "", "", []byte{})
	f.Fuzz(func(t *testing.T, subject, ver, epoch, sender, seq, msgID, sig string, payload []byte) {
		hdr := map[string][]string{HdrVersion: {ver}, HdrEpoch: {epoch}, HdrSender: {sender}, HdrSeq: {seq}, HdrMsgID: {msgID}, HdrSig: {sig}}
		e, err := ParseEnvelope(room, subject, hdr, payload)
		if err != nil {
			return
		}
		if e.VerifySignature() != nil {
			return
		}
		pt, err := e.Open(key)
		if err != nil {
			return
		}
		// Anything that verifies and opens must be the original message.
		if !bytes.Equal(e.Payload, env.Payload) || e.Subject != env.Subject || string(pt) != "secret payload" {
			t.Fatalf("forged envelope accepted: %+v", e)
		}
	})
}

func BenchmarkSealMessage1K(b *testing.B) {
	sender, room, key, _ := testEnvelope(b)
	pt := make([]byte, 1024)
	nonce := make([]byte, NonceSize)
	subj := "unibus.room." + room.String() + ".msg"
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := SealMessage(sender, room, subj, 1, key, MsgID([8]byte{}, uint64(i+1)), uint64(i+1), nonce, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenMessage1K(b *testing.B) {
	sender, room, key, _ := testEnvelope(b)
	nonce := make([]byte, NonceSize)
	subj := "unibus.room." + room.String() + ".msg"
	env, _ := SealMessage(sender, room, subj, 1, key, MsgID([8]byte{}, 1), 1, nonce, make([]byte, 1024))
	h := env.Headers()
	b.ReportAllocs()
	for b.Loop() {
		e, err := ParseEnvelope(room, subj, h, env.Payload)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.VerifySignature(); err != nil {
			b.Fatal(err)
		}
		if _, err := e.Open(key); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckStoredAt: a message stored more than SendWindow after (or
// before) its send time is a replay; a version 1 envelope has no send time
// to check.
func TestCheckStoredAt(t *testing.T) {
	sender := mustID(t, fixedSeed(1))
	room, _ := ParseRoomID("00112233445566778899aabbccddeeff")
	key, _ := RoomKeyFromBytes(bytes.Repeat([]byte{7}, 32))
	sent := time.UnixMilli(1767225600000)
	env, err := SealMessageAt(sender, room, "unibus.room."+room.String()+".msg", 1, key, MsgID([8]byte{1}, 1), 1, sent, make([]byte, NonceSize), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for d, ok := range map[time.Duration]bool{
		0: true, SendWindow: true, -SendWindow: true, time.Millisecond: true,
		SendWindow + time.Millisecond: false, -SendWindow - time.Millisecond: false, 3 * time.Minute: false,
	} {
		err := env.CheckStoredAt(sent.Add(d))
		if (err == nil) != ok || !ok && !errors.Is(err, ErrReplayed) {
			t.Errorf("stored %v after sending: %v", d, err)
		}
	}
	env.V1 = true
	if err := env.CheckStoredAt(sent.Add(time.Hour)); err != nil {
		t.Errorf("v1: %v", err)
	}
}

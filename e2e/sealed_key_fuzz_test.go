package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/unibus/unibus/identity"
)

// loadVectors reads testdata/vectors.json, the seeds of the fuzz targets.
func loadVectors(tb testing.TB) vectorFile {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		tb.Fatal(err)
	}
	return vf
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustIdentity(tb testing.TB, seedHex string) *identity.Identity {
	tb.Helper()
	id, err := identity.FromSeed(mustHex(tb, seedHex))
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// sealedKeyErrors are the errors OpenRoomKey documents.
var sealedKeyErrors = []error{ErrWrongRecipient, ErrMalformed, ErrBadSignature, ErrDecrypt}

func wrapsOneOf(err error, sentinels []error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzOpenRoomKey opens arbitrary sealed keys as the member of the sealed
// vectors. With resign set, the test signs the fuzzed fields with the
// vectors' sealer, so that every input gets past the signature into HPKE
// (the ML-KEM + X25519 decapsulation and the AEAD). It must never panic,
// must fail with one of the documented errors, and may succeed only for
// a vector: HPKE's info binds room, epoch and member, and its ciphertext
// is not malleable, so anything else that opens would be a forgery.
func FuzzOpenRoomKey(f *testing.F) {
	vf := loadVectors(f)
	type want struct {
		room   RoomID
		epoch  uint64
		sealed []byte
		sig    []byte
		key    []byte
	}
	var wants []want
	v0 := vf.SealedKeys[0]
	member := mustIdentity(f, v0.MemberSeed)
	sealer := mustIdentity(f, v0.SealerSeed)
	for _, v := range vf.SealedKeys {
		if v.MemberSeed != v0.MemberSeed || v.SealerSeed != v0.SealerSeed {
			f.Fatal("the sealed vectors no longer share one member and sealer")
		}
		room, err := ParseRoomID(v.Room)
		if err != nil {
			f.Fatal(err)
		}
		w := want{room, v.Epoch, mustHex(f, v.Sealed), mustHex(f, v.Sig), mustHex(f, v.RoomKey)}
		wants = append(wants, w)
		m, s := member.SignPub(), sealer.SignPub()
		f.Add(w.room[:], w.epoch, m[:], s[:], w.sealed, w.sig, false)
		f.Add(w.room[:], w.epoch, m[:], s[:], w.sealed, w.sig, true)
		f.Add(w.room[:], w.epoch+1, m[:], s[:], w.sealed, w.sig, true)
		f.Add(w.room[:], w.epoch, m[:], s[:], w.sealed[:len(w.sealed)-1], w.sig, true)
	}

	f.Fuzz(func(t *testing.T, room []byte, epoch uint64, memberPub, sealerPub, sealed, sig []byte, resign bool) {
		sk := SealedKey{Epoch: epoch, Sealed: sealed, Sig: sig}
		copy(sk.Room[:], room)
		copy(sk.Member[:], memberPub)
		copy(sk.Sealer[:], sealerPub)
		if resign {
			sk.Sealer = sealer.SignPub()
			sk.Sig = sealer.Sign(SealedKeySigMessage(sk.Room, sk.Epoch, sk.Member, sk.Sealed))
		}
		verr := sk.VerifySig()
		if verr != nil && !wrapsOneOf(verr, sealedKeyErrors) {
			t.Fatalf("VerifySig: undocumented error %v", verr)
		}
		k, err := OpenRoomKey(member, sk)
		if err != nil {
			if !wrapsOneOf(err, sealedKeyErrors) {
				t.Fatalf("OpenRoomKey: undocumented error %v", err)
			}
			if k != nil {
				t.Fatal("OpenRoomKey returned a key with an error")
			}
			return
		}
		if verr != nil {
			t.Fatalf("opened a sealed key whose signature fails: %v", verr)
		}
		for _, w := range wants {
			if sk.Room == w.room && sk.Epoch == w.epoch && sk.Member == member.SignPub() && bytes.Equal(sk.Sealed, w.sealed) {
				if !bytes.Equal(k.Bytes(), w.key) {
					t.Fatal("a sealed vector opened to another key")
				}
				if !resign && (sk.Sealer != sealer.SignPub() || !bytes.Equal(sk.Sig, w.sig)) {
					t.Fatal("a sealed vector verified under another signature or sealer")
				}
				return
			}
		}
		t.Fatalf("opened a sealed key that is no vector: room %s epoch %d sealed %x", sk.Room, sk.Epoch, sk.Sealed)
	})
}

// FuzzParseRoomID: a room id is accepted only in its one text form (32
// lowercase hex characters), which String gives back exactly.
func FuzzParseRoomID(f *testing.F) {
	f.Add("00112233445566778899aabbccddeeff")
	f.Add("00112233445566778899AABBCCDDEEFF")
	f.Add("00112233445566778899aabbccddeef")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoomID(s)
		if err != nil {
			if !errors.Is(err, ErrBadRoomID) {
				t.Fatalf("undocumented error %v", err)
			}
			if r != (RoomID{}) {
				t.Fatal("a refused id returned a room")
			}
			return
		}
		if r.String() != s {
			t.Fatalf("accepted %q, which is not the canonical form %q", s, r.String())
		}
	})
}

package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/unibus/unibus/identity"
)

// sealN seals n messages of size bytes from sender in room.
func sealN(t testing.TB, sender *identity.Identity, room RoomID, key *RoomKey, n, size int) []*Envelope {
	t.Helper()
	subj := "unibus.room." + room.String() + ".msg"
	out := make([]*Envelope, n)
	for i := range out {
		nonce := make([]byte, NonceSize)
		rand.Read(nonce)
		pt := make([]byte, size)
		rand.Read(pt)
		env, err := SealMessage(sender, room, subj, 1, key, MsgID([8]byte{7}, uint64(i+1)), uint64(i+1), nonce, pt)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = env
	}
	return out
}

// The signature SealMessage makes is crypto/ed25519's, byte for byte, and
// crypto/ed25519 accepts it (the vectors pin the bytes as well).
func TestSealSignatureIsStandardEd25519(t *testing.T) {
	sender, _ := identity.Generate()
	room, _ := NewRoomID()
	key, _ := NewRoomKey(nil)
	for _, env := range sealN(t, sender, room, key, 20, 300) {
		signed := append(env.AAD(), env.Payload...)
		if want := ed25519.Sign(sender.SigningKey(), signed); !bytes.Equal(env.Sig, want) {
			t.Fatal("signature differs from crypto/ed25519's")
		}
		if pub := sender.SignPub(); !ed25519.Verify(pub[:], signed, env.Sig) {
			t.Fatal("crypto/ed25519 rejects the signature")
		}
	}
}

// Every way of verifying gives the same answer, per envelope, for valid
// envelopes and for each kind of forgery, whatever else is in the batch.
func TestVerifyWithAndBatch(t *testing.T) {
	sender, _ := identity.Generate()
	other, _ := identity.Generate()
	room, _ := NewRoomID()
	key, _ := NewRoomKey(nil)
	sk, err := NewSenderKey(sender.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := NewSenderKey(other.SignPub())
	envs := sealN(t, sender, room, key, 9, 100)
	// Forgeries: a flipped payload bit, a flipped signature bit, another
	// sender named, a signature by another key, a changed epoch, and a
	// non-canonical S (S + group order).
	envs[1].Payload = bytes.Clone(envs[1].Payload)
	envs[1].Payload[30] ^= 1
	envs[2].Sig = bytes.Clone(envs[2].Sig)
	envs[2].Sig[5] ^= 0x40
	envs[3].Sender = other.SignPub()
	envs[4].Sig = other.Sign(append(envs[4].AAD(), envs[4].Payload...))
	envs[5].Epoch = 2
	envs[6].Sig = nonCanonicalS(envs[6].Sig)
	bad := map[int]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true}

	bv := NewBatchVerifier()
	for round := range 2 { // a reused verifier gives the same answers
		for _, e := range envs {
			k := sk
			if e.Sender == other.SignPub() {
				k = otherKey
			}
			bv.Add(k, e)
		}
		if bv.Len() != len(envs) {
			t.Fatalf("Len %d", bv.Len())
		}
		errs := bv.Verify()
		if len(errs) != len(envs) || bv.Len() != 0 {
			t.Fatalf("round %d: %d results, %d left queued", round, len(errs), bv.Len())
		}
		for i, e := range envs {
			k := sk
			if e.Sender == other.SignPub() {
				k = otherKey
			}
			results := map[string]error{"VerifySignature": e.VerifySignature(), "VerifyWith": e.VerifyWith(k), "batch": errs[i]}
			for how, err := range results {
				if bad[i] != (err != nil) {
					t.Errorf("round %d envelope %d %s: got %v, want bad=%v", round, i, how, err, bad[i])
				}
				if err != nil && !errors.Is(err, ErrBadSignature) {
					t.Errorf("envelope %d %s: %v does not wrap ErrBadSignature", i, how, err)
				}
			}
		}
	}
	// A valid batch verifies as a batch.
	good := sealN(t, sender, room, key, 5, 64)
	for _, e := range good {
		bv.Add(sk, e)
	}
	for i, err := range bv.Verify() {
		if err != nil {
			t.Fatalf("valid envelope %d: %v", i, err)
		}
	}
	// The key must be the named sender's.
	if err := good[0].VerifyWith(otherKey); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verified with another sender's key: %v", err)
	}
	if err := good[0].VerifyWith(nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verified with no key: %v", err)
	}
	bv.Add(otherKey, good[0])
	bv.Add(nil, good[1])
	bv.Add(sk, good[2])
	errs := bv.Verify()
	if errs[0] == nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("mismatched keys in a batch: %v", errs)
	}
	if errs := bv.Verify(); len(errs) != 0 {
		t.Fatalf("empty batch: %v", errs)
	}
}

// nonCanonicalS returns sig with S replaced by S + L (the group order): the
// same scalar mod L, which RFC 8032 requires verifiers to reject.
func nonCanonicalS(sig []byte) []byte {
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	out := bytes.Clone(sig)
	carry := 0
	for i := range 32 {
		v := int(out[32+i]) + int(l[i]) + carry
		out[32+i], carry = byte(v), v>>8
	}
	return out
}

func TestNewSenderKeyRejectsNonPoints(t *testing.T) {
	// Not every 32-byte string is a curve point: find one that is not.
	for i := range 256 {
		var p identity.SignPub
		p[0], p[31] = byte(i), 0x7f
		if _, err := NewSenderKey(p); err != nil {
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("error %v does not wrap ErrBadSignature", err)
			}
			return
		}
	}
	t.Fatal("every candidate decoded as a point")
}

// Benchmarks of the message codec, per message, with allocations. Sizes
// are the plaintext; run with -benchmem.

var benchSizes = []int{256, 1024, 16384}

func BenchmarkSeal(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			sender, room, key, _ := testEnvelope(b)
			pt := make([]byte, size)
			nonce := make([]byte, NonceSize)
			subj := "unibus.room." + room.String() + ".msg"
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := SealMessage(sender, room, subj, 1, key, MsgID([8]byte{}, uint64(i+1)), uint64(i+1), nonce, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen is what a receiver does per message: parse into a reused
// envelope, verify (one-off, with a prepared key, or in a batch of 64),
// decrypt.
func BenchmarkOpen(b *testing.B) {
	for _, size := range benchSizes {
		sender, room, key, _ := testEnvelope(b)
		envs := sealN(b, sender, room, key, 64, size)
		hdrs := make([]map[string][]string, len(envs))
		for i, e := range envs {
			hdrs[i] = e.Headers()
		}
		sk, _ := NewSenderKey(sender.SignPub())
		run := func(name string, verify func(e *Envelope) error) {
			b.Run(fmt.Sprintf("%s/%d", name, size), func(b *testing.B) {
				var e Envelope
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					j := i % len(envs)
					if err := ParseEnvelopeInto(&e, room, envs[j].Subject, hdrs[j], envs[j].Payload); err != nil {
						b.Fatal(err)
					}
					if err := verify(&e); err != nil {
						b.Fatal(err)
					}
					if _, err := e.Open(key); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		run("one-off", (*Envelope).VerifySignature)
		run("prepared-key", func(e *Envelope) error { return e.VerifyWith(sk) })
		b.Run(fmt.Sprintf("batch64/%d", size), func(b *testing.B) {
			bv := NewBatchVerifier()
			parsed := make([]Envelope, len(envs))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				j := i % len(envs)
				if err := ParseEnvelopeInto(&parsed[j], room, envs[j].Subject, hdrs[j], envs[j].Payload); err != nil {
					b.Fatal(err)
				}
				bv.Add(sk, &parsed[j])
				if bv.Len() == len(envs) {
					for _, err := range bv.Verify() {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				if _, err := parsed[j].Open(key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEd25519 is the bare primitive over a 1 KiB message's signed
// bytes: crypto/ed25519 against what the envelope code uses.
func BenchmarkEd25519(b *testing.B) {
	sender, room, key, _ := testEnvelope(b)
	env := sealN(b, sender, room, key, 1, 1024)[0]
	signed := append(env.AAD(), env.Payload...)
	pub := sender.SignPub()
	b.Run("crypto-ed25519-sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ed25519.Sign(sender.SigningKey(), signed)
		}
	})
	b.Run("crypto-ed25519-verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub[:], signed, env.Sig) {
				b.Fatal("verify")
			}
		}
	})
}

package httpsig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"testing"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
)

// verifyCase is a key, a message and a signature, and whether
// crypto/ed25519 accepts them.
type verifyCase struct {
	name          string
	pub, msg, sig []byte
}

// forgedSig makes a signature by the key encoded as pubEnc without its
// secret, which crypto/ed25519's cofactorless check accepts when the key
// has small order: R = [s]B for a random s, retried until [k]A is the
// identity (k = H(R || A || M), reduced), so that [s]B = R + [k]A holds.
func forgedSig(t *testing.T, pubEnc, msg []byte) []byte {
	t.Helper()
	var cy curve.CompressedEdwardsY
	if _, err := cy.SetBytes(pubEnc); err != nil {
		t.Fatal(err)
	}
	var A curve.EdwardsPoint
	if _, err := A.SetCompressedY(&cy); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		s, err := scalar.New().SetRandom(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var R curve.EdwardsPoint
		R.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, s)
		var rEnc curve.CompressedEdwardsY
		rEnc.SetEdwardsPoint(&R)
		h := sha512.New()
		h.Write(rEnc[:])
		h.Write(pubEnc)
		h.Write(msg)
		k, err := scalar.New().SetBytesModOrderWide(h.Sum(nil))
		if err != nil {
			t.Fatal(err)
		}
		var kA curve.EdwardsPoint
		if !kA.Mul(&A, k).IsIdentity() {
			continue
		}
		sig := append([]byte(nil), rEnc[:]...)
		var sb [32]byte
		if err := s.ToBytes(sb[:]); err != nil {
			t.Fatal(err)
		}
		return append(sig, sb[:]...)
	}
	t.Fatal("no forgery found")
	return nil
}

// ℓ, the order of the base point, little-endian.
var orderL = [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}

func verifyCorpus(t *testing.T) []verifyCase {
	var cases []verifyCase
	for i := range 24 {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := []byte(fmt.Sprintf("signature base %d", i))
		sig := ed25519.Sign(priv, msg)
		flipped := append([]byte(nil), sig...)
		flipped[i*5%64] ^= 1 << (i % 8)
		plusL := append([]byte(nil), sig...) // S + ℓ: not reduced
		carry := 0
		for j := range 32 {
			v := int(plusL[32+j]) + int(orderL[j]) + carry
			plusL[32+j], carry = byte(v), v>>8
		}
		otherMsg := append([]byte(nil), msg...)
		otherMsg[0] ^= 1
		cases = append(cases,
			verifyCase{fmt.Sprintf("valid %d", i), pub, msg, sig},
			verifyCase{fmt.Sprintf("tampered signature %d", i), pub, msg, flipped},
			verifyCase{fmt.Sprintf("S+l %d", i), pub, msg, plusL},
			verifyCase{fmt.Sprintf("other message %d", i), pub, otherMsg, sig},
		)
	}
	// Small-order keys (the identity, a point of order 2, one of order 4)
	// and non-canonical encodings of them (y ≥ p): crypto/ed25519 accepts
	// signatures forged for them, so the prepared path must too: it is the
	// same rule, not a stricter one. Signatures never come from such keys
	// here (identity.ParseSignPub and the store keep them out); this pins
	// the rule only.
	identityEnc := append([]byte{1}, make([]byte, 31)...)
	order2 := append([]byte{0xec}, bytesFF(30)...)
	order2 = append(order2, 0x7f) // y = p − 1 = −1: the point (0, −1), order 2
	nonCanonicalIdentity := append([]byte{0xee}, bytesFF(30)...)
	nonCanonicalIdentity = append(nonCanonicalIdentity, 0x7f) // y = p + 1 ≡ 1
	for _, k := range []struct {
		name string
		enc  []byte
	}{{"identity key", identityEnc}, {"order-2 key", order2}, {"non-canonical identity key", nonCanonicalIdentity}} {
		msg := []byte("forged for " + k.name)
		cases = append(cases, verifyCase{k.name + ", forged", k.enc, msg, forgedSig(t, k.enc, msg)})
	}
	// Keys that decode to no point, and wrong lengths.
	notAPoint := append([]byte{2}, make([]byte, 31)...) // y = 2 is not on the curve
	cases = append(cases,
		verifyCase{"not a point", notAPoint, []byte("m"), make([]byte, 64)},
		verifyCase{"short signature", cases[0].pub, cases[0].msg, cases[0].sig[:63]},
		verifyCase{"short key", cases[0].pub[:31], cases[0].msg, cases[0].sig},
	)
	return cases
}

func bytesFF(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0xff
	}
	return b
}

// TestPreparedKeysAreCryptoEd25519sRule: verification through a KeyCache
// (curve25519-voi, prepared keys) accepts exactly what crypto/ed25519
// accepts, on a miss and on a hit, so the cache changes the cost and
// nothing else.
func TestPreparedKeysAreCryptoEd25519sRule(t *testing.T) {
	keys := NewKeyCache(1024)
	accepted := 0
	for _, c := range verifyCorpus(t) {
		want := len(c.pub) == ed25519.PublicKeySize && ed25519.Verify(c.pub, c.msg, c.sig)
		if want {
			accepted++
		}
		for _, round := range []string{"miss", "hit"} {
			if got := verifySignature(keys, c.pub, c.msg, c.sig); got != want {
				t.Errorf("%s (%s): prepared key says %v, crypto/ed25519 %v", c.name, round, got, want)
			}
		}
		if got := verifySignature(nil, c.pub, c.msg, c.sig); got != want {
			t.Errorf("%s: without a cache %v, crypto/ed25519 %v", c.name, got, want)
		}
	}
	// 24 valid signatures and the 3 forgeries for small-order keys.
	if accepted != 27 {
		t.Errorf("crypto/ed25519 accepted %d of the corpus, want 27: the corpus is not what it says", accepted)
	}
}

// A cache shown more keys than it holds starts over and stays bounded,
// and still verifies.
func TestKeyCacheIsBounded(t *testing.T) {
	keys := NewKeyCache(8)
	for i := range 50 {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := []byte{byte(i)}
		if !verifySignature(keys, pub, msg, ed25519.Sign(priv, msg)) {
			t.Fatalf("key %d: valid signature refused", i)
		}
		if n := keys.Len(); n < 1 || n > 8 {
			t.Fatalf("after %d keys the cache holds %d, want 1..8", i+1, n)
		}
	}
}

package identity

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"
)

// SignPub is an ed25519 public key: a user's id.
type SignPub [ed25519.PublicKeySize]byte

// ErrBadSignPub is returned for a malformed sign-pub.
var ErrBadSignPub = errors.New("sign-pub must be 64 lowercase hex characters (an ed25519 public key)")

// ParseSignPub parses the 64-lowercase-hex form.
func ParseSignPub(s string) (SignPub, error) {
	var p SignPub
	if len(s) != 2*len(p) {
		return p, ErrBadSignPub
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return p, ErrBadSignPub
		}
	}
	if _, err := hex.Decode(p[:], []byte(s)); err != nil {
		return p, ErrBadSignPub
	}
	return p, nil
}

// SignPubFromNKey converts a NATS user public nkey ("U…") to a sign-pub.
// Only the canonical text is accepted: base32 decoding skips CR and LF,
// and a login under another spelling of a key would be registered under a
// username that kicking the key's canonical nkey does not find.
func SignPubFromNKey(nkey string) (SignPub, error) {
	var p SignPub
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(nkey))
	if err != nil {
		return p, fmt.Errorf("decode user nkey: %w", err)
	}
	if len(raw) != len(p) {
		return p, fmt.Errorf("decode user nkey: %d bytes", len(raw))
	}
	copy(p[:], raw)
	if p.NKey() != nkey {
		return SignPub{}, fmt.Errorf("decode user nkey: not in canonical form")
	}
	return p, nil
}

// String is the 64-lowercase-hex form.
func (p SignPub) String() string { return hex.EncodeToString(p[:]) }

// NKey is the NATS user public nkey form ("U…").
func (p SignPub) NKey() string {
	s, err := nkeys.Encode(nkeys.PrefixByteUser, p[:])
	if err != nil { // cannot happen for a 32-byte key
		panic(err)
	}
	return string(s)
}

// Verify reports whether sig is p's ed25519 signature of msg.
func (p SignPub) Verify(msg, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(p[:], msg, sig)
}

// Equal compares in constant time.
func (p SignPub) Equal(q SignPub) bool { return subtle.ConstantTimeCompare(p[:], q[:]) == 1 }

// IsZero reports whether p is the zero key.
func (p SignPub) IsZero() bool { return p == SignPub{} }

// Short returns the first 16 hex characters, for display only.
func (p SignPub) Short() string { return p.String()[:16] }

// KEMPub is a validated MLKEM768X25519 HPKE public key.
type KEMPub struct {
	raw []byte
	pk  hpke.PublicKey
}

// KEMPubSize is the encoded size of a KEM public key (ML-KEM-768
// encapsulation key 1184 bytes + X25519 32 bytes).
const KEMPubSize = 1216

// ErrBadKEMPub is returned for bytes that are not a KEM public key.
var ErrBadKEMPub = errors.New("KEM public key must be a 1216-byte MLKEM768X25519 public key")

// ParseKEMPub validates and wraps the encoded KEM public key.
func ParseKEMPub(b []byte) (KEMPub, error) {
	if len(b) != KEMPubSize {
		return KEMPub{}, ErrBadKEMPub
	}
	pk, err := hpke.MLKEM768X25519().NewPublicKey(b)
	if err != nil {
		return KEMPub{}, ErrBadKEMPub
	}
	return KEMPub{raw: append([]byte(nil), b...), pk: pk}, nil
}

// Bytes returns a copy of the encoded key.
func (k KEMPub) Bytes() []byte { return append([]byte(nil), k.raw...) }

// HPKE returns the key for crypto/hpke.
func (k KEMPub) HPKE() hpke.PublicKey { return k.pk }

// IsZero reports whether k is unset.
func (k KEMPub) IsZero() bool { return k.pk == nil }

// Equal compares in constant time.
func (k KEMPub) Equal(o KEMPub) bool { return subtle.ConstantTimeCompare(k.raw, o.raw) == 1 }

// KEMBindingLabel prefixes the message a user signs to publish its KEM key.
const KEMBindingLabel = "unibus/v1/kem-binding"

// KEMBindingMessage is the byte string signed to bind a KEM public key to a
// sign-pub: label || 0x00 || sign-pub (32) || kem-pub (1216).
func KEMBindingMessage(signPub SignPub, kemPub KEMPub) []byte {
	m := make([]byte, 0, len(KEMBindingLabel)+1+len(signPub)+len(kemPub.raw))
	m = append(m, KEMBindingLabel...)
	m = append(m, 0)
	m = append(m, signPub[:]...)
	return append(m, kemPub.raw...)
}

// ErrBadKEMBinding is returned when a KEM key's binding signature fails.
var ErrBadKEMBinding = errors.New("KEM key binding signature does not verify for this sign-pub")

// VerifyKEMBinding checks that sig is signPub's binding of kemPub.
func VerifyKEMBinding(signPub SignPub, kemPub KEMPub, sig []byte) error {
	if !signPub.Verify(KEMBindingMessage(signPub, kemPub), sig) {
		return ErrBadKEMBinding
	}
	return nil
}

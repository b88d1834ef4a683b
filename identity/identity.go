// Package identity is a unibus user's key material: one 32-byte seed from
// which the ed25519 signing key and the ML-KEM-768+X25519 KEM key are
// derived, and the file that stores it.
//
// The seed is stored as a NATS user nkey seed ("SU…"), so the same file logs
// in to the data plane with standard NATS tooling. The signing public key,
// written as 64 lowercase hex characters, is the user's id everywhere (its
// sign-pub). The KEM key is derived deterministically (HKDF-SHA256 with a
// versioned label, then crypto/hpke's MLKEM768X25519 DeriveKeyPair), so a
// seed is the whole identity. See docs/FORMATS.md.
//
// This package imports nothing of unibus's: formats and identities are the
// inner ring.
package identity

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nkeys"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// SeedSize is the size of an identity seed in bytes.
const SeedSize = 32

// KEMDerivationLabel is the HKDF info label that derives the KEM key's input
// keying material from the seed. Changing it changes every KEM key.
const KEMDerivationLabel = "unibus/v1/kem-ikm"

// Identity is a user's private key material. It has no exported fields and
// its String, GoString and LogValue print only the public sign-pub, so an
// identity can never be logged or formatted by accident.
type Identity struct {
	seed    [SeedSize]byte
	sign    ed25519.PrivateKey
	signPub SignPub
	kem     hpke.PrivateKey
	kemPub  KEMPub
}

// Generate returns a new random identity.
func Generate() (*Identity, error) {
	var seed [SeedSize]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return FromSeed(seed[:])
}

// FromSeed derives the identity of a 32-byte seed.
func FromSeed(seed []byte) (*Identity, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("identity seed must be %d bytes, got %d", SeedSize, len(seed))
	}
	id := &Identity{}
	copy(id.seed[:], seed)
	id.sign = ed25519.NewKeyFromSeed(id.seed[:])
	copy(id.signPub[:], id.sign.Public().(ed25519.PublicKey))
	ikm, err := hkdf.Key(sha256.New, id.seed[:], nil, KEMDerivationLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive KEM seed: %w", err)
	}
	id.kem, err = hpke.MLKEM768X25519().DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("derive KEM key: %w", err)
	}
	id.kemPub, err = ParseKEMPub(id.kem.PublicKey().Bytes())
	if err != nil {
		return nil, fmt.Errorf("derive KEM key: %w", err)
	}
	return id, nil
}

// SignPub returns the user's id: the ed25519 public key.
func (id *Identity) SignPub() SignPub { return id.signPub }

// KEMPub returns the user's KEM public key, which the user publishes.
func (id *Identity) KEMPub() KEMPub { return id.kemPub }

// KEMPrivate returns the HPKE private key, for opening sealed room keys.
func (id *Identity) KEMPrivate() hpke.PrivateKey { return id.kem }

// Sign signs msg with the ed25519 signing key. The signature is the
// standard deterministic RFC 8032 one, byte for byte what crypto/ed25519
// makes (TestSignIsCryptoEd25519); curve25519-voi computes it in about
// half the time here, which every login and signed request pays.
func (id *Identity) Sign(msg []byte) []byte { return voi.Sign(voi.PrivateKey(id.sign), msg) }

// SigningKey returns the ed25519 private key (for the HTTP request signer).
func (id *Identity) SigningKey() ed25519.PrivateKey { return id.sign }

// NKey returns the data-plane login: the NATS user public nkey ("U…").
func (id *Identity) NKey() string { return id.signPub.NKey() }

// SignNonce signs a NATS server nonce; it is the nats.Nkey callback.
func (id *Identity) SignNonce(nonce []byte) ([]byte, error) { return id.Sign(nonce), nil }

// SignKEMBinding returns the signature that binds the user's KEM public key
// to its sign-pub (published with PUT /v1/me/kem-key).
func (id *Identity) SignKEMBinding() []byte {
	return id.Sign(KEMBindingMessage(id.signPub, id.kemPub))
}

// seedString returns the nkey seed form ("SU…") of the seed. It is secret.
func (id *Identity) seedString() ([]byte, error) {
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, id.seed[:])
	if err != nil {
		return nil, err
	}
	return kp.Seed()
}

// String prints only the public sign-pub.
func (id *Identity) String() string { return "identity(" + id.signPub.String() + ")" }

// GoString prints only the public sign-pub.
func (id *Identity) GoString() string { return id.String() }

// LogValue logs only the public sign-pub.
func (id *Identity) LogValue() slog.Value { return slog.StringValue(id.signPub.String()) }

// ErrNotUserSeed is returned for a seed string that is not a NATS user seed.
var ErrNotUserSeed = errors.New("not a NATS user nkey seed (SU…)")

// ParseSeed parses an nkey user seed string ("SU…").
func ParseSeed(s []byte) (*Identity, error) {
	prefix, raw, err := nkeys.DecodeSeed(s)
	if err != nil {
		return nil, fmt.Errorf("parse identity seed: %w", err)
	}
	if prefix != nkeys.PrefixByteUser {
		return nil, ErrNotUserSeed
	}
	return FromSeed(raw)
}

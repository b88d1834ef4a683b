package httpsig

import (
	"crypto/ed25519"
	"sync"
	"sync/atomic"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// stdlibRule is crypto/ed25519's verification rule (cofactorless, S
// reduced, small-order points allowed), so that a signature is accepted
// exactly when crypto/ed25519.Verify would accept it.
var stdlibRule = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// KeyCache holds public keys prepared for verification (curve25519-voi's
// expanded form: the point decompressed and its multiplication table built
// once), so that a server verifying many requests from the same users pays
// for that once per key rather than once per request: about half the cost
// of a verification. It is keyed by the key's 32 bytes, holds public data
// only and decides nothing: the caller resolves and authorizes the key on
// every request as before. It is safe for concurrent use and takes no lock
// on a hit. When it has taken in max keys it starts over empty, so it
// stays bounded whatever keys it is shown (give or take the inserts that
// race with the reset).
type KeyCache struct {
	max  int64
	n    atomic.Int64
	keys sync.Map // string(public key) -> *voi.ExpandedPublicKey
}

// NewKeyCache returns a cache of at most size prepared keys (at least 1).
func NewKeyCache(size int) *KeyCache { return &KeyCache{max: int64(max(size, 1))} }

// Len is the number of keys held.
func (c *KeyCache) Len() int { return int(c.n.Load()) }

// expanded returns pub prepared, from the cache if it holds it.
func (c *KeyCache) expanded(pub ed25519.PublicKey) (*voi.ExpandedPublicKey, error) {
	if x, ok := c.keys.Load(string(pub)); ok {
		return x.(*voi.ExpandedPublicKey), nil
	}
	x, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil, err
	}
	if c.n.Add(1) > c.max {
		c.keys.Clear()
		c.n.Store(1)
	}
	c.keys.Store(string(pub), x)
	return x, nil
}

// verifySignature reports whether sig is pub's signature of msg under
// crypto/ed25519's rule, with pub prepared through keys if it is not nil.
func verifySignature(keys *KeyCache, pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	if keys == nil {
		return ed25519.Verify(pub, msg, sig)
	}
	x, err := keys.expanded(pub)
	if err != nil {
		return false // no point decodes from pub: crypto/ed25519 refuses it too
	}
	return voi.VerifyExpandedWithOptions(x, msg, sig, stdlibRule)
}

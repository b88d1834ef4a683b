package kvstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

// nonceRec is UNIBUS_nonces/<key-id>.<sha256(nonce)>.
type nonceRec struct {
	Expires time.Time `json:"expires"`
}

func nonceKey(keyID, nonce string) string {
	h := sha256.Sum256([]byte(nonce))
	return keyID + "." + hex.EncodeToString(h[:16])
}

// UseNonce records the pair with create-if-absent and a per-key TTL of
// expires-now, on the stream leader: of concurrent uses, on any node, one
// creates the key and the others find it. A record found expired (by the
// caller's clock; JetStream removes it on its own clock) is replaced by a
// compare-and-set, so that here too only one use wins. Any failure to write
// is an error: the caller denies (fail closed).
func (s *Store) UseNonce(ctx context.Context, keyID, nonce string, now, expires time.Time) error {
	op := "use nonce of " + keyID
	if err := s.check(op); err != nil {
		return err
	}
	if err := token("key id", keyID); err != nil {
		return wrap(op, err)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	key := nonceKey(keyID, nonce)
	ttl := max(expires.Sub(now).Round(time.Second)+time.Second, time.Second)
	val := jsonBytes(nonceRec{Expires: expires.UTC()})
	for range 5 {
		_, err := s.nonces.Create(ctx, key, val, jetstream.KeyTTL(ttl))
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return wrap(op, err)
		}
		var had nonceRec
		rev, err := getJSON(ctx, s.nonces, key, &had)
		if errors.Is(err, store.ErrNotFound) {
			continue // expired in the meantime
		}
		if err != nil {
			return wrap(op, err)
		}
		if had.Expires.IsZero() {
			// "null" or "{}": not a record we wrote. Never read it as
			// expired (that would allow a replay): deny.
			return wrap(op, fmt.Errorf("%w: nonce record without an expiry", store.ErrUnavailable))
		}
		if now.Before(had.Expires) {
			return wrap(op, store.ErrReplay)
		}
		_, err = s.js.Publish(ctx, "$KV."+BucketNonces+"."+key, val,
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return wrap(op, err)
		}
	}
	return wrap(op, fmt.Errorf("contended: %w", store.ErrUnavailable))
}

package kvstore

import (
	"context"
	"strconv"
	"time"
)

// probeKey is the key Probe writes in each bucket it tries. No listing or
// watch of the store matches it: users are listed and watched under "u.*",
// a room's epochs under "<room>.e.*", and the ledger has no listing.
const probeKey = "probe"

// Probe writes one small record, at now, to the usage ledger's bucket and,
// if all, to each bucket on disk whose writes the control plane's changes
// need first (users, rooms), and returns the first failure. The nonces bucket is in memory,
// so the nonce every signed request writes says nothing of the disk; and
// in nats-server a stream whose write failed once (a full disk) keeps
// failing its writes until it is reloaded, while other streams go on: a
// probe of one bucket would miss it.
func (s *Store) Probe(ctx context.Context, now time.Time, all bool) error {
	if err := s.check("probe"); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	v := []byte(strconv.FormatInt(now.UnixMilli(), 10))
	for _, b := range []struct {
		name string
		put  func(context.Context, string, []byte) (uint64, error)
	}{{BucketUsage, s.usage.Put}, {BucketUsers, s.users.Put}, {BucketRooms, s.rooms.Put}} {
		if b.name != BucketUsage && !all {
			break
		}
		if _, err := b.put(ctx, probeKey, v); err != nil {
			return wrap("probe "+b.name, err)
		}
	}
	return nil
}

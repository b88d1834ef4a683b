package kvstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/jsretry"
)

var _ store.Ledger = (*Store)(nil)

// usageRec is UNIBUS_usage/<sign-pub>.<kind>: bytes per day they lapse
// (store.UsageDay; "0" is never), the lapsed days dropped at each write.
type usageRec struct {
	Days map[string]int64 `json:"days"`
}

func usageKey(user string, kind store.UsageKind) string { return user + "." + string(kind) }

// AddUsage implements store.Ledger: a compare-and-set of the user's record.
func (s *Store) AddUsage(ctx context.Context, user string, kind store.UsageKind, n int64, until, now time.Time) error {
	op := "add usage of " + user
	if err := s.check(op); err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("%s: negative byte count %d", op, n)
	}
	if token("sign-pub", user) != nil || token("kind", string(kind)) != nil {
		return wrap(op, errInvalid)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	key, day := usageKey(user, kind), strconv.FormatInt(store.UsageDay(until), 10)
	// Several nodes (and blob uploads) add to one user's record: on a
	// conflict, back off a little at random and read it again.
	for attempt := range 50 {
		if attempt > 0 {
			if err := jsretry.Sleep(ctx, time.Duration(rand.Int64N(int64(2*time.Millisecond*time.Duration(min(attempt, 10)))))); err != nil {
				return wrap(op, err)
			}
		}
		var r usageRec
		rev, err := getJSON(ctx, s.usage, key, &r)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return wrap(op, err)
		}
		if r.Days == nil {
			r.Days = map[string]int64{}
		}
		for d := range r.Days {
			if v, err := strconv.ParseInt(d, 10, 64); err != nil || !store.UsageCounts(v, now) {
				delete(r.Days, d)
			}
		}
		r.Days[day] += n
		if rev == 0 {
			_, err = s.usage.Create(ctx, key, jsonBytes(r))
		} else {
			_, err = s.usage.Update(ctx, key, jsonBytes(r), rev)
		}
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return wrap(op, err)
		}
	}
	return wrap(op, fmt.Errorf("contended: %w", store.ErrUnavailable))
}

// Usage implements store.Ledger.
func (s *Store) Usage(ctx context.Context, user string, kind store.UsageKind, now time.Time) (int64, error) {
	op := "read usage of " + user
	if err := s.check(op); err != nil {
		return 0, err
	}
	if token("sign-pub", user) != nil || token("kind", string(kind)) != nil {
		return 0, wrap(op, errInvalid)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var r usageRec
	if _, err := getJSON(ctx, s.usage, usageKey(user, kind), &r); errors.Is(err, store.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, wrap(op, err)
	}
	var total int64
	for d, b := range r.Days {
		if v, err := strconv.ParseInt(d, 10, 64); err == nil && store.UsageCounts(v, now) {
			total += b
		}
	}
	return total, nil
}

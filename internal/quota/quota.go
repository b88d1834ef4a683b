// Package quota enforces the per-user quotas: what a user may store (blob
// bytes, room message bytes) and create (rooms), counted in the control
// plane's usage ledger (store.Ledger) so that every node of a cluster and
// every restart sees the same totals.
//
// A Meter serves one kind. Its reads are cached for a short while and its
// charges are either written at once (AddNow: blobs, rooms — rare, large
// or counted) or gathered and written in batches (Charge: room messages,
// one ledger write per user per flush whatever the rate). A quota is
// therefore exact on one node for AddNow and within one flush interval's
// worth of traffic for Charge; across the nodes of a cluster, within what
// each node admitted before it read the others' writes (Refresh). Any
// error reading the ledger refuses (fail closed).
package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// ErrExceeded is a request that would take its user over the quota.
var ErrExceeded = errors.New("quota exceeded")

// Defaults.
const (
	// DefaultRefresh is how old a cached total may be before a check reads
	// the ledger again.
	DefaultRefresh = 2 * time.Second
	// DefaultFlush is how often Run writes gathered charges.
	DefaultFlush = time.Second
	// maxIdleUsers bounds the users a Meter remembers: past it, the ones
	// with nothing pending are forgotten (they are read again when seen).
	maxIdleUsers = 1 << 16
)

// Meter enforces one kind's quota.
type Meter struct {
	ledger  store.Ledger
	kind    store.UsageKind
	limit   int64 // 0: no limit (charges are still counted)
	now     func() time.Time
	refresh time.Duration
	log     *slog.Logger

	mu    sync.Mutex
	users map[string]*entry
}

type entry struct {
	stored  int64     // the ledger's total at readAt
	readAt  time.Time // zero: never read
	pending map[time.Time]int64
	charged int64 // sum of pending
}

// Options of a Meter; zero values take the defaults.
type Options struct {
	Now     func() time.Time
	Refresh time.Duration
	Logger  *slog.Logger
}

// New returns a Meter of kind over ledger. limit is the quota in the
// kind's unit; 0 or less is no limit.
func New(ledger store.Ledger, kind store.UsageKind, limit int64, o Options) *Meter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Meter{ledger: ledger, kind: kind, limit: max(limit, 0), now: o.Now, refresh: o.Refresh, log: o.Logger, users: map[string]*entry{}}
}

// Limit returns the quota; 0 is none.
func (m *Meter) Limit() int64 { return m.limit }

// Left returns how much more user may store or create now: the quota less
// what the ledger holds and what this meter has charged but not yet
// written. With no quota it is -1, without reading the ledger. A ledger
// that cannot be read is an error (the caller refuses).
func (m *Meter) Left(ctx context.Context, user string) (int64, error) {
	if m.limit == 0 {
		return -1, nil
	}
	used, err := m.used(ctx, user)
	if err != nil {
		return 0, err
	}
	return max(m.limit-used, 0), nil
}

// Allow reports whether n more fits user's quota: nil, ErrExceeded, or
// the ledger's error.
func (m *Meter) Allow(ctx context.Context, user string, n int64) error {
	left, err := m.Left(ctx, user)
	switch {
	case err != nil:
		return err
	case left >= 0 && n > left:
		return fmt.Errorf("%w: %s %d of %d used", ErrExceeded, m.kind, m.limit-left, m.limit)
	}
	return nil
}

// used is the cached total plus what is pending, reading the ledger when
// the cache is older than the refresh interval.
func (m *Meter) used(ctx context.Context, user string) (int64, error) {
	now := m.now()
	m.mu.Lock()
	e := m.users[user]
	if e != nil && !e.readAt.IsZero() && now.Sub(e.readAt) < m.refresh {
		u := e.stored + e.charged
		m.mu.Unlock()
		return u, nil
	}
	m.mu.Unlock()
	stored, err := m.ledger.Usage(ctx, user, m.kind, now)
	if err != nil {
		return 0, fmt.Errorf("read %s usage: %w", m.kind, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e = m.entry(user)
	e.stored, e.readAt = stored, now
	return stored + e.charged, nil
}

// entry returns user's entry, making room for it. m.mu is held.
func (m *Meter) entry(user string) *entry {
	if e := m.users[user]; e != nil {
		return e
	}
	if len(m.users) >= maxIdleUsers {
		for k, v := range m.users {
			if v.charged == 0 {
				delete(m.users, k)
			}
		}
	}
	e := &entry{}
	m.users[user] = e
	return e
}

// Charge counts n for user until until (zero: for ever); the next Flush
// writes it to the ledger.
func (m *Meter) Charge(user string, n int64, until time.Time) {
	if n <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entry(user)
	if e.pending == nil {
		e.pending = map[time.Time]int64{}
	}
	// Charges are written per ledger day: gather them by day already.
	day := store.UsageDay(until)
	key := time.Time{}
	if day != 0 {
		key = time.Unix(day*86400, 0).UTC()
	}
	e.pending[key] += n
	e.charged += n
}

// AddNow writes n for user, counted until until, to the ledger before it
// returns, and counts it in the cache.
func (m *Meter) AddNow(ctx context.Context, user string, n int64, until time.Time) error {
	if err := m.ledger.AddUsage(ctx, user, m.kind, n, until, m.now()); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.users[user]; e != nil {
		e.stored += n
	}
	return nil
}

// Flush writes every gathered charge. A charge whose write failed stays
// pending for the next flush (the ledger add is not idempotent, so a write
// whose outcome is unknown may count twice: a quota errs on the safe side).
func (m *Meter) Flush(ctx context.Context) error {
	type job struct {
		user  string
		until time.Time
		n     int64
	}
	m.mu.Lock()
	var jobs []job
	for u, e := range m.users {
		for until, n := range e.pending {
			jobs = append(jobs, job{u, until, n})
		}
		e.pending, e.charged = nil, 0
	}
	// What is being written still counts against the quota until the
	// cache is read again: move it into stored.
	for _, j := range jobs {
		m.users[j.user].stored += j.n
	}
	m.mu.Unlock()
	var errs []error
	now := m.now()
	for _, j := range jobs {
		if err := m.ledger.AddUsage(ctx, j.user, m.kind, j.n, j.until, now); err != nil {
			errs = append(errs, err)
			m.mu.Lock()
			e := m.entry(j.user)
			e.stored -= j.n
			if e.pending == nil {
				e.pending = map[time.Time]int64{}
			}
			e.pending[j.until] += j.n
			e.charged += j.n
			m.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// Run flushes every interval (DefaultFlush if 0) until ctx ends, then
// once more with a short deadline.
func (m *Meter) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultFlush
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := m.Flush(fctx); err != nil {
				m.log.Warn("usage ledger: the last charges could not be written; they are not counted", "kind", m.kind, "err", err)
			}
			return
		case <-t.C:
			if err := m.Flush(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("usage ledger: charges could not be written; retrying at the next flush", "kind", m.kind, "err", err)
			}
		}
	}
}

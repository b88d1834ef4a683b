package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/unibus/unibus/internal/quota"
	"github.com/unibus/unibus/wire"
)

// UserRates bounds each user's signed requests, per second, in two
// buckets: reads (GET) and changes (everything else: each writes the store
// and most write the audit log, which is never pruned). A bucket holds
// ten seconds' worth, so a burst passes and a flood is cut to the rate.
// Zero turns a bucket off. Admins are not limited: they are the operators'
// own tools.
type UserRates struct {
	Reads   float64
	Changes float64
}

// DefaultUserRates suit a small team: a member's client makes a handful of
// requests per room it joins, and its messages do not use the control
// plane at all.
var DefaultUserRates = UserRates{Reads: 50, Changes: 10}

// limitedUsers bounds the limiters kept: when full, those idle for a
// minute are dropped, then all of them.
const limitedUsers = 1 << 16

// userLimits holds one pair of token buckets per user.
type userLimits struct {
	rates UserRates
	now   func() time.Time
	mu    sync.Mutex
	users map[string]*userLimiter
}

type userLimiter struct {
	reads, changes *rate.Limiter
	seen           time.Time
}

func newUserLimits(r UserRates, now func() time.Time) *userLimits {
	return &userLimits{rates: r, now: now, users: map[string]*userLimiter{}}
}

func bucket(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(int(10*perSecond), 1))
}

// allow takes one token from the user's bucket for the request's kind.
func (l *userLimits) allow(user string, change bool) bool {
	l.mu.Lock()
	now := l.now()
	u, ok := l.users[user]
	if !ok {
		if len(l.users) >= limitedUsers {
			for k, v := range l.users {
				if now.Sub(v.seen) > time.Minute {
					delete(l.users, k)
				}
			}
			if len(l.users) >= limitedUsers {
				clear(l.users)
			}
		}
		u = &userLimiter{reads: bucket(l.rates.Reads), changes: bucket(l.rates.Changes)}
		l.users[user] = u
	}
	u.seen = now
	l.mu.Unlock()
	if change {
		return u.changes.AllowN(now, 1)
	}
	return u.reads.AllowN(now, 1)
}

// errRateLimited is a user over its request rate.
func errRateLimited(change bool, r UserRates) error {
	kind, per := "reads", r.Reads
	if change {
		kind, per = "changes", r.Changes
	}
	return errorf(http.StatusTooManyRequests, wire.CodeRateLimited,
		"too many requests from this user: at most %g %s per second (with bursts of %d); slow down and retry", per, kind, max(int(10*per), 1))
}

// quotaAllows checks that n more fits the caller's quota of m (nil: no
// quota): 403 quota_exceeded for a count, 507 for bytes; a ledger that
// cannot be read is unavailable (fail closed).
func (s *Server) quotaAllows(ctx context.Context, m *quota.Meter, c *caller, n int64, what string, status int) error {
	if m == nil {
		return nil
	}
	err := m.Allow(ctx, c.user.SignPub, n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, quota.ErrExceeded):
		return errQuota(m, what, status)
	default:
		return s.errLedger(c, err)
	}
}

func errQuota(m *quota.Meter, what string, status int) error {
	return errorf(status, wire.CodeQuotaExceeded, "this user's quota of %s is %d; nothing was done (an operator can raise it)", what, m.Limit())
}

func (s *Server) errLedger(c *caller, err error) error {
	s.log.Warn("quota ledger unreadable; request refused", "user", c.key.Short(), "err", err)
	return errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "the usage ledger cannot be read now; nothing was done, retrying is safe")
}

// dailyChange counts one change against the user's daily budget, or
// refuses it: 429 quota_exceeded with Retry-After at the next UTC day.
// Checked, like the rate, before the nonce is written.
func (s *Server) dailyChange(ctx context.Context, w http.ResponseWriter, c *caller, user string, now time.Time) error {
	q := s.o.ChangeQuota
	if q == nil {
		return nil
	}
	switch err := q.Allow(ctx, user, 1); {
	case errors.Is(err, quota.ErrExceeded):
		next := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
		w.Header().Set("Retry-After", strconv.Itoa(int(next.Sub(now).Seconds())+1))
		s.o.Metrics.Denials.WithLabelValues(wire.CodeQuotaExceeded).Inc()
		return errorf(http.StatusTooManyRequests, wire.CodeQuotaExceeded,
			"this user's budget of %d changes a day is spent; nothing was done: it renews at 00:00 UTC (an operator can raise it)", q.Limit())
	case err != nil:
		return s.errLedger(c, err)
	}
	q.Charge(user, 1, now)
	return nil
}

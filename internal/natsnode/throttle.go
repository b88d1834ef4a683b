package natsnode

import (
	"sync"
	"time"
)

// Failed logins are limited per key: a key whose signed logins were
// refused (revoked or unknown) failedLoginLimit times within
// failedLoginWindow is refused at once, without asking the Authorizer,
// until the window has passed. Only logins whose signature verified are
// counted, so nobody but the key's holder can use up its allowance (a
// stranger's bad signatures never lock a user out).
const (
	failedLoginLimit  = 5
	failedLoginWindow = 10 * time.Second
	// failedLoginKeys bounds the memory the limiter uses; when it is
	// full, expired entries are dropped, then the whole table.
	failedLoginKeys = 1 << 16
)

// loginThrottle counts refused logins per key.
type loginThrottle struct {
	mu   sync.Mutex
	now  func() time.Time
	keys map[string]*failures
}

type failures struct {
	n     int
	since time.Time
}

func newLoginThrottle(now func() time.Time) *loginThrottle {
	if now == nil {
		now = time.Now
	}
	return &loginThrottle{now: now, keys: map[string]*failures{}}
}

// throttled reports whether key has used up its refused logins for now.
func (t *loginThrottle) throttled(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.keys[key]
	if !ok {
		return false
	}
	if t.now().Sub(f.since) >= failedLoginWindow {
		delete(t.keys, key)
		return false
	}
	return f.n >= failedLoginLimit
}

// refused counts one refused login of key.
func (t *loginThrottle) refused(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f, ok := t.keys[key]
	if !ok || now.Sub(f.since) >= failedLoginWindow {
		if !ok && len(t.keys) >= failedLoginKeys {
			t.prune(now)
		}
		t.keys[key] = &failures{n: 1, since: now}
		return
	}
	f.n++
}

// prune drops expired entries, and everything if none had expired.
func (t *loginThrottle) prune(now time.Time) {
	for k, f := range t.keys {
		if now.Sub(f.since) >= failedLoginWindow {
			delete(t.keys, k)
		}
	}
	if len(t.keys) >= failedLoginKeys {
		clear(t.keys)
	}
}

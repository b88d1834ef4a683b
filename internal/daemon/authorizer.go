package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store"
)

// storeAuthorizer grants data-plane logins from the store: active users
// get the member ACL (the same for every member: what rooms a member may
// use is the relay's and the listeners' business). Until the store is set and open, on any store error, and —
// in a cluster — while this node cannot see a quorum (a stale leader would
// still answer reads), it denies (fail closed).
//
// Grants of active users are cached (authcache.go) and kept current two
// ways, both part of the store's contract: the daemon forgets a user's
// grant on every change Store.Watch reports (Daemon.storeChanged), and a
// login serves a cached grant whole only while Store.ChangeVersion is
// what it was before the grant was read. Where the version moved (SQLite:
// anything was committed since, by anyone, such as a revocation by
// 'membershipd user revoke --db' in another process, which Watch reports
// only at its next poll) the user's record is read again.
type storeAuthorizer struct {
	st     atomic.Pointer[store.Store]
	quorum func() bool
	cache  grantCache
}

// set makes st the store logins are authorized from.
func (a *storeAuthorizer) set(st store.Store) {
	a.st.Store(&st)
	a.cache.clear()
}

// forget drops the cached grant of the user nkey; called before the
// user's connections are closed after an access change.
func (a *storeAuthorizer) forget(nkey string) {
	sp, err := identity.SignPubFromNKey(nkey)
	if err != nil {
		a.cache.clear() // cannot happen for a key from the store: forget all
		return
	}
	a.cache.forget(sp)
}

func (a *storeAuthorizer) Grant(ctx context.Context, nkey string) (natsnode.Grant, error) {
	p := a.st.Load()
	if p == nil {
		return natsnode.Grant{}, fmt.Errorf("store not open yet: %w", store.ErrUnavailable)
	}
	st := *p
	if a.quorum != nil && !a.quorum() {
		return natsnode.Grant{}, fmt.Errorf("no JetStream quorum visible from this node: %w", store.ErrUnavailable)
	}
	sp, err := identity.SignPubFromNKey(nkey)
	if err != nil {
		return natsnode.Grant{}, err
	}
	now := time.Now()
	// The change version is read before the cache and the store: a commit
	// after this read makes the next login's version differ.
	var version uint64 // 0: none, never matches an entry's
	if v, err := st.ChangeVersion(ctx); err == nil {
		version = v
	}
	if e := a.cache.lookup(sp, now); e != nil {
		if version != 0 && e.version == version {
			return e.grant, nil
		}
		u, err := st.GetUser(ctx, e.grant.SignPubHex)
		if err == nil && u.Status == store.StatusActive {
			return e.grant, nil
		}
		// Revoked by the admin tool, or unreadable: the store decides.
	}
	slot, gen := a.cache.begin(sp)
	g, err := grantFromStore(ctx, st, sp)
	if err != nil || !g.Active {
		a.cache.drop(sp, slot)
		return g, err
	}
	a.cache.putVersion(slot, gen, g, now, version)
	return g, nil
}

// grantFromStore is the user's grant as the store has it. A key the store
// does not know is an inactive grant, like a revoked user's: a verdict, not
// a failure, so it is counted as "inactive" and the refused-login throttle
// counts it (a stranger with fresh keys would otherwise cost a store
// lookup and a warning per attempt, unthrottled).
func grantFromStore(ctx context.Context, st store.Store, sp identity.SignPub) (natsnode.Grant, error) {
	u, err := st.GetUser(ctx, sp.String())
	if errors.Is(err, store.ErrNotFound) {
		return natsnode.Grant{}, nil
	}
	if err != nil {
		return natsnode.Grant{}, err
	}
	if u.Status != store.StatusActive {
		return natsnode.Grant{}, nil
	}
	return natsnode.Grant{Active: true, SignPubHex: u.SignPub}, nil
}

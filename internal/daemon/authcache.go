package daemon

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
)

// grantCache keeps the data-plane grants storeAuthorizer read from the
// store, so that a user who logs in again soon costs no store read. It is
// a shortcut to what the store says now, never a second source of truth:
//
//   - forget(user) is called after every store write that may change the
//     user's access, before the write is acknowledged and before the
//     user's connections are closed: the API closes the user's connections
//     after such a write and before it answers (dataPlane.Kick), and in kv
//     mode the watch of the users and members buckets reports every such
//     write, whichever node or admin tool made it (Daemon.accessChanged).
//   - A grant read from the store before an invalidation is never served
//     after it. Each user has a generation that forget increments; a
//     login reads the generation before it reads the store and stores its
//     grant with it, and a grant is served only while the generation is
//     unchanged. (Deleting the entry instead would race with a login that
//     read the store just before the write and stores its grant just
//     after the delete.)
//   - Only grants of active users are kept. Unknown and revoked users,
//     store errors, a missing quorum and a store that is not open yet
//     always go to the store, or are denied before it. A grant is served
//     for at most grantTTL even if nothing invalidates it.
//   - The login path takes no lock: sync.Map and atomics.
//
// Keys are users' sign-pubs, not the nkey strings clients send, so that
// one key has exactly one entry.
type grantCache struct {
	slots sync.Map     // identity.SignPub → *grantSlot
	n     atomic.Int64 // slots, roughly (for the bound)
}

// grantSlot is one user's generation and newest grant.
type grantSlot struct {
	gen   atomic.Uint64
	entry atomic.Pointer[grantEntry]
}

type grantEntry struct {
	grant   natsnode.Grant // shared by every login that uses it: read only
	gen     uint64         // the slot's generation before the store was read
	expires time.Time
	// version is the store's change version read before the store was
	// (SQLite: see storeAuthorizer.Grant); 0 where there is none.
	version uint64
}

// grantTTL bounds how long a grant is served without a store read, as a
// backstop: invalidation, not expiry, is what makes the cache correct.
const grantTTL = 5 * time.Second

// maxGrantSlots bounds the cache's memory: past it, the cache is emptied.
const maxGrantSlots = 1 << 16

// get returns the user's grant if one is cached, current and unexpired.
func (c *grantCache) get(user identity.SignPub, now time.Time) (natsnode.Grant, bool) {
	if e := c.lookup(user, now); e != nil {
		return e.grant, true
	}
	return natsnode.Grant{}, false
}

// lookup returns the user's entry if it is current and unexpired, else nil.
func (c *grantCache) lookup(user identity.SignPub, now time.Time) *grantEntry {
	v, ok := c.slots.Load(user)
	if !ok {
		return nil
	}
	s := v.(*grantSlot)
	e := s.entry.Load()
	if e == nil || e.gen != s.gen.Load() || !now.Before(e.expires) {
		return nil
	}
	return e
}

// begin returns the user's slot and its generation; call it before
// reading the store, and pass both to put or drop afterwards.
func (c *grantCache) begin(user identity.SignPub) (*grantSlot, uint64) {
	v, ok := c.slots.Load(user)
	if !ok {
		var loaded bool
		if v, loaded = c.slots.LoadOrStore(user, new(grantSlot)); !loaded && c.n.Add(1) > maxGrantSlots {
			// Slots that were removed are never reached again, so logins
			// still holding one only fill an entry nobody reads.
			c.slots.Clear()
			c.n.Store(0)
		}
	}
	s := v.(*grantSlot)
	return s, s.gen.Load()
}

// put stores the grant the store gave after begin returned gen.
func (c *grantCache) put(s *grantSlot, gen uint64, g natsnode.Grant, now time.Time) {
	c.putVersion(s, gen, g, now, 0)
}

// putVersion is put with the store's change version read before the store.
func (c *grantCache) putVersion(s *grantSlot, gen uint64, g natsnode.Grant, now time.Time, version uint64) {
	s.entry.Store(&grantEntry{grant: g, gen: gen, expires: now.Add(grantTTL), version: version})
}

// drop invalidates the user's entry and removes the slot after a login
// whose grant is not kept (unknown or revoked user, store error), so that
// logins of keys the store does not know leave nothing behind.
func (c *grantCache) drop(user identity.SignPub, s *grantSlot) {
	s.gen.Add(1)
	if c.slots.CompareAndDelete(user, s) {
		c.n.Add(-1)
	}
}

// forget invalidates the user's cached grant. A login that read the store
// before forget was called cannot store a grant that is served after it:
// it called begin before its read, so its slot is either the one in the
// map now, whose generation forget increments, or one that drop or clear
// has already removed from the map, where nothing is read again.
func (c *grantCache) forget(user identity.SignPub) {
	if v, ok := c.slots.Load(user); ok {
		v.(*grantSlot).gen.Add(1)
	}
}

// clear invalidates every cached grant (see forget).
func (c *grantCache) clear() {
	c.slots.Clear()
	c.n.Store(0)
}

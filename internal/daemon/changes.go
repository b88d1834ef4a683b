package daemon

import (
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/store"
)

// storeChanged acts on a change the store reports (Store.Watch): it
// forgets the cached grants the change may have made stale, and closes the
// live data-plane connections of users whose access changed, so that they
// log in again with what the store says now. A user's KEM key, a new user
// (who held no grant) and a room's epoch do not change a grant.
func (d *Daemon) storeChanged(c store.Change) {
	switch c.Kind {
	case store.ChangeAll:
		d.authz.cache.clear()
	case store.ChangeUser:
		if c.StatusChanged {
			d.accessChanged(c.User, c.Own)
		}
	case store.ChangeRoom:
		for _, pub := range c.Left {
			d.accessChanged(pub, c.Own)
		}
		for _, pub := range c.Joined {
			d.accessChanged(pub, c.Own)
		}
	}
}

// accessChanged forgets the user's cached grant and closes the user's live
// data-plane connections on this node; the client reconnects and is
// authorized again with its new rooms, or not at all. A change the store
// reports as this daemon's own was made through the API, which closes the
// user's connections itself after the write (dataPlane.Kick): only the
// grant is forgotten here.
func (d *Daemon) accessChanged(signPub string, own bool) {
	sp, err := identity.ParseSignPub(signPub)
	if err != nil {
		d.authz.cache.clear() // not a key: forget every grant
		return
	}
	d.authz.cache.forget(sp)
	if own {
		return
	}
	n, err := d.node.Kick(sp.NKey())
	if err != nil {
		d.log.Warn("kick after an access change failed", "sign_pub", signPub, "err", err)
		return
	}
	d.metrics.Kicked.Add(float64(n))
}

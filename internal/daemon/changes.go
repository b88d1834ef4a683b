package daemon

import (
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/store"
)

// storeChanged acts on a change the store reports (Store.Watch): the
// relay's directory forgets what the change made stale (a room's members
// and epoch, a user's status), and so does the login grant cache; a user
// whose status changed has its live data-plane connections closed on this
// node, so that it logs in again with what the store says now (a revoked
// user is denied). A membership change closes nothing: a member's
// connection carries no room in its permissions, and the relay and the
// listeners read membership from the directory.
func (d *Daemon) storeChanged(c store.Change) {
	switch c.Kind {
	case store.ChangeAll:
		d.dir.ForgetAll()
		d.authz.cache.clear()
	case store.ChangeUser:
		d.dir.ForgetUser(c.User)
		if c.StatusChanged {
			d.accessChanged(c.User, c.Own)
		}
	case store.ChangeRoom:
		d.dir.ForgetRoom(c.Room)
	}
}

// accessChanged forgets the user's cached grant and closes the user's live
// data-plane connections on this node; the client reconnects and is
// authorized again, or not at all. A change the store
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
	n, err := d.eng.Kick(sp.NKey())
	if err != nil {
		d.log.Warn("kick after an access change failed", "sign_pub", signPub, "err", err)
		return
	}
	d.metrics.Kicked.Add(float64(n))
}

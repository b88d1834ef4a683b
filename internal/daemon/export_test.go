package daemon

import (
	"time"

	"github.com/unibus/unibus/identity"
)

// GrantCached reports whether a login of signPub would be served from the
// grant cache now (tests check that the cache was warm before a change).
func GrantCached(d *Daemon, signPub string) bool {
	sp, err := identity.ParseSignPub(signPub)
	if err != nil {
		return false
	}
	_, ok := d.authz.cache.get(sp, time.Now())
	return ok
}

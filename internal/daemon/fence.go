package daemon

import "time"

// A node that cannot see a quorum of the cluster may be on the minority
// side of a partition: what it knows of memberships and revocations may
// be stale, and stays so until the partition heals. It refuses logins at
// once (the authorizer) and, once the quorum has been gone for fenceAfter,
// closes every member's connection, so that a revocation or a removal
// made on the majority cannot be outlived here. fenceAfter is longer than
// a meta-leader election (nats-server's election timeout is 4–9 s): when
// the leader dies the followers see no quorum until one of them is
// elected, and closing every member's connection then would turn a node
// loss into a reconnect storm.
// A node that has lost its routes to so many peers that it could not be
// part of any quorum (natsnode.Node.Isolated: routes notice a silent peer
// in 3–4 s) is not watching an election: it is cut off, and fences at once.
// Members reconnect to a node that has the quorum (their clients know
// every node), or here once it is back.
const (
	fenceAfter = 8 * time.Second
	fenceEvery = 500 * time.Millisecond
)

// fenceMinority runs in cluster mode until Close.
func (d *Daemon) fenceMinority() {
	t := time.NewTicker(fenceEvery)
	defer t.Stop()
	var lostAt time.Time
	fenced := false
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		if d.node.Quorum() {
			if !lostAt.IsZero() {
				// What was read while cut off may be what the majority
				// has since changed: read it all again.
				d.forgetAccess()
			}
			if fenced {
				d.log.Info("quorum visible again: serving member traffic")
			}
			lostAt, fenced = time.Time{}, false
			continue
		}
		if lostAt.IsZero() {
			lostAt = time.Now()
			// The watch that invalidates cached grants and memberships
			// cannot hear the majority now: drop them, so that nothing
			// cached before the cut is served after it heals.
			d.forgetAccess()
		}
		if _, size := d.node.MetaLeader(); time.Since(lostAt) < fenceAfter && !d.node.Isolated(size) {
			continue
		}
		// Every tick while fenced: a login that raced the first kick
		// was refused anyway, but nothing is left to chance.
		n, err := d.node.KickMembers()
		if err != nil {
			d.log.Warn("fence: could not close member connections", "err", err)
		}
		if !fenced || n > 0 {
			d.log.Warn("no quorum visible: member connections closed and logins refused until it returns",
				"since", lostAt.Format(time.RFC3339), "closed", n)
		}
		fenced = true
	}
}

// forgetAccess drops every cached login grant and the relay's cached
// rooms and users: the next login and the next message read the store.
func (d *Daemon) forgetAccess() {
	d.authz.cache.clear()
	d.dir.ForgetAll()
}

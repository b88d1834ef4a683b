package daemon

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// BusJetStream is the internal identity's JetStream context in the bus
// account (room streams, listeners): tests read what was stored with it.
func BusJetStream(d *Daemon) jetstream.JetStream { return d.js }

// SweepListeners runs one sweep of the listeners now.
func SweepListeners(ctx context.Context, d *Daemon) (int, error) {
	return d.listeners.Sweep(ctx, d.roomStreams(ctx))
}

// ControlJetStream is the internal identity's JetStream context in the
// control account (KV buckets, the blob object store), or nil on SQLite.
func ControlJetStream(d *Daemon) jetstream.JetStream {
	if d.cnc == nil {
		return nil
	}
	js, err := jetstream.New(d.cnc)
	if err != nil {
		return nil
	}
	return js
}

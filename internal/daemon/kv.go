package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// connectControl opens the internal identity's control-account connection
// (in-process: it needs no quorum) and the context that stops the watch.
func (d *Daemon) connectControl() error {
	var err error
	if d.cnc, err = d.node.Connect(d.internal.NKey(), d.internal.SignNonce, nats.Name("membershipd-control")); err != nil {
		return fmt.Errorf("internal control connection: %w", err)
	}
	d.watchCtx, d.stopWatch = context.WithCancel(context.Background())
	return nil
}

// openKV opens the KV store and the object store over the internal
// identity's control-account connection, repairs the membership index,
// and starts the watch that kicks users whose access changed on any node.
func (d *Daemon) openKV(ctx context.Context) error {
	log := d.log.With("component", "kvstore")
	kv, err := kvstore.Open(ctx, d.cnc, kvstore.Options{Replicas: d.cfg.KVReplicas, Bootstrap: d.cfg.KVBootstrap, Logger: log})
	if err != nil {
		return fmt.Errorf("open kv store: %w", err)
	}
	blobs, err := objblobs.Open(ctx, d.cnc, objblobs.Options{Replicas: d.cfg.KVReplicas, Bootstrap: d.cfg.KVBootstrap, Logger: log})
	if err != nil {
		return fmt.Errorf("open blob object store: %w", err)
	}
	// The watch must run before the store serves: it is what closes the
	// connections of users whose access another node changed. Right after a
	// cold start or a loss of quorum the buckets' own leaders may still be
	// electing: retry within the bootstrap budget.
	deadline := time.Now().Add(d.cfg.KVBootstrap)
	for {
		err := kv.WatchAccess(d.watchCtx, d.accessChanged)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("watch users and members: %w", err)
		}
		log.Warn("cannot watch the users and members buckets yet; retrying", "err", err)
		time.Sleep(time.Second)
	}
	// The index repair is an optimisation of availability (readers check
	// the index against the room records anyway): a failure is logged.
	go func() {
		for attempt := 0; attempt < 10 && d.watchCtx.Err() == nil; attempt++ {
			n, err := kv.Repair(d.watchCtx)
			if err == nil {
				if n > 0 {
					log.Warn("repaired the rooms_by_member index (a write was interrupted)", "entries", n)
				}
				return
			}
			log.Warn("rooms_by_member index repair failed; retrying", "err", err)
			time.Sleep(5 * time.Second)
		}
	}()
	d.lazy.set(kv)
	d.lazyBlobs.set(blobs)
	log.Info("kv store open", "replicas", d.cfg.KVReplicas)
	return nil
}

// accessChanged forgets the user's cached grant and closes the user's live
// data-plane connections on this node; the client reconnects and is
// authorized again with its new rooms, or not at all.
func (d *Daemon) accessChanged(signPub string) {
	sp, err := identity.ParseSignPub(signPub)
	if err != nil {
		d.authz.cache.clear() // not a key: forget every grant
		return
	}
	d.authz.cache.forget(sp)
	n, err := d.node.Kick(sp.NKey())
	if err != nil {
		d.log.Warn("kick after an access change failed", "sign_pub", signPub, "err", err)
		return
	}
	d.metrics.Kicked.Add(float64(n))
}

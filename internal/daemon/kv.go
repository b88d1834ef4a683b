package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// openKV opens the internal identity's control-account connection
// (in-process: it needs no quorum), creates the KV store and the blob
// object store over it, which open in the background (a cold cluster has
// no quorum to open them on yet, and until they are open they deny
// everything), and serves logins from the store.
func (d *Daemon) openKV() error {
	var err error
	if d.cnc, err = d.eng.Connect(d.internal.NKey(), d.internal.SignNonce, nats.Name("membershipd-control")); err != nil {
		return fmt.Errorf("internal control connection: %w", err)
	}
	log := d.log.With("component", "kvstore")
	d.kv = kvstore.New(d.cnc, kvstore.Options{Replicas: d.cfg.KVReplicas, Bootstrap: d.cfg.KVBootstrap, Logger: log})
	d.objs = objblobs.New(d.cnc, objblobs.Options{Replicas: d.cfg.KVReplicas, Bootstrap: d.cfg.KVBootstrap, Logger: log})
	d.store, d.blobs = d.kv, d.objs
	return d.useStore()
}

// waitKV waits until the KV store and the object store are open (each
// retries within the bootstrap budget) or ctx ends.
func (d *Daemon) waitKV(ctx context.Context) error {
	if err := d.kv.WaitOpen(ctx); err != nil {
		return fmt.Errorf("open kv store: %w", err)
	}
	if err := d.objs.WaitOpen(ctx); err != nil {
		return fmt.Errorf("open blob object store: %w", err)
	}
	d.log.Info("kv store open", "component", "kvstore", "replicas", d.cfg.KVReplicas)
	return nil
}

// awaitKV waits in the background for a cluster's stores to open, then
// repairs the index; a store that cannot open within its budget stops the
// daemon.
func (d *Daemon) awaitKV() {
	if err := d.waitKV(d.ctx); err != nil {
		if d.ctx.Err() == nil {
			d.log.Error("could not open the kv store; stopping", "err", err)
			d.fail(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.KVBootstrap)
	err := d.ensureStreams(ctx)
	cancel()
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Error("could not create the shared room stream; stopping", "err", err)
			d.fail(err)
		}
		return
	}
	d.repairIndex()
}

// repairIndexAttempts and repairIndexWait pace the index repair's retries.
const (
	repairIndexAttempts = 10
	repairIndexWait     = 5 * time.Second
)

// repairIndex runs the KV store's index repair, retrying until it passes
// or the daemon closes. The repair is an optimisation of availability
// (readers check the index against the room records anyway): a failure is
// logged.
func (d *Daemon) repairIndex() {
	log := d.log.With("component", "kvstore")
	for range repairIndexAttempts {
		n, err := d.kv.Repair(d.ctx)
		if err == nil {
			if n > 0 {
				log.Warn("repaired the rooms_by_member index (a write was interrupted)", "entries", n)
			}
			return
		}
		if d.ctx.Err() != nil {
			return
		}
		log.Warn("rooms_by_member index repair failed; retrying", "err", err)
		if !sleep(d.ctx, repairIndexWait) {
			return
		}
	}
}

// sleep waits for dt or until ctx ends, and reports whether it waited the
// whole time.
func sleep(ctx context.Context, dt time.Duration) bool {
	t := time.NewTimer(dt)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

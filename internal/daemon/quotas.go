package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/quota"
	"github.com/unibus/unibus/internal/store"
)

// Defaults of the per-user limits that are not sizes.
const (
	// DefaultUserRooms is how many rooms one user may create.
	DefaultUserRooms = 100
	// DefaultUserConns is how many data-plane connections one user may
	// hold on one node: a client holds one, a host running many agents
	// under one identity a few dozen.
	DefaultUserConns = 64
	// DefaultUserDailyChanges is how many signed changes one non-admin
	// user may make in a UTC day: every change may append to the audit
	// log, which is never pruned. A member's client makes a handful per
	// room it joins; this is one every nine seconds, all day.
	DefaultUserDailyChanges = 10000
	// quotaShare is the default byte quota of each kind: this fraction of
	// the file system that holds it, so that no one user fills it.
	quotaShare = 10
)

// quotas are the node's quota meters.
type quotas struct {
	rooms, blobs, msgs, changes *quota.Meter
	stop                        context.CancelFunc
	done                        chan struct{}
}

// startQuotas makes the meters over the store's usage ledger, resolving
// the byte quotas left at their default against the file systems'
// sizes, and starts writing the message charges.
func (d *Daemon) startQuotas() error {
	ledger, ok := d.store.(store.Ledger)
	if !ok {
		return fmt.Errorf("quotas: the %s store keeps no usage ledger", d.cfg.Store)
	}
	blobDir := d.cfg.BlobDir
	if d.cfg.Store == StoreKV {
		blobDir = d.cfg.NATSStore
	}
	blobs, err := quotaBytes(d.cfg.UserBlobBytes, blobDir, "--user-blob-bytes")
	if err != nil {
		return err
	}
	msgs, err := quotaBytes(d.cfg.UserMsgBytes, d.cfg.NATSStore, "--user-msg-bytes")
	if err != nil {
		return err
	}
	o := quota.Options{Logger: d.log.With("component", "quota")}
	q := &quotas{
		rooms:   quota.New(ledger, store.UsageRooms, max(d.cfg.UserRooms, 0), o),
		blobs:   quota.New(ledger, store.UsageBlobBytes, blobs, o),
		msgs:    quota.New(ledger, store.UsageMsgBytes, msgs, o),
		changes: quota.New(ledger, store.UsageChanges, max(d.cfg.UserDailyChanges, 0), o),
		done:    make(chan struct{}),
	}
	var ctx context.Context
	ctx, q.stop = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range []*quota.Meter{q.msgs, q.changes} {
		wg.Go(func() { m.Run(ctx, quota.DefaultFlush) })
	}
	go func() {
		defer close(q.done)
		wg.Wait()
	}()
	d.quotas = q
	d.log.Info("per-user quotas", "rooms", q.rooms.Limit(), "blob_bytes", q.blobs.Limit(), "msg_bytes", q.msgs.Limit(), "changes_a_day", q.changes.Limit(), "connections_per_node", max(d.cfg.UserConns, 0))
	return nil
}

// close writes the last message charges; the relay must have stopped.
func (q *quotas) close() {
	q.stop()
	select {
	case <-q.done:
	case <-time.After(10 * time.Second):
	}
}

// quotaBytes resolves a byte quota: negative is none (0), positive is
// itself, 0 is a tenth of the size of the file system that holds dir.
func quotaBytes(v int64, dir, flag string) (int64, error) {
	switch {
	case v < 0:
		return 0, nil
	case v > 0:
		return v, nil
	}
	total, err := totalBytes(dir)
	if err != nil || total <= 0 {
		return 0, fmt.Errorf("%s: cannot read the size of the file system of %s to default the quota to a tenth of it (%v): set it in bytes, or 0 for none", flag, dir, err)
	}
	return total / quotaShare, nil
}

package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

// DefaultDiskReserve is the free space kept on every file system that holds
// the node's state: below it the node refuses new data (room messages,
// blobs) and /healthz reports wire.HealthDiskLow, while the control plane's
// own small writes (nonces, membership, the audit log) go on in it.
const DefaultDiskReserve = 256 << 20

const (
	// diskEvery is how often the free space is read: the relay and the
	// blob upload consult the last reading.
	diskEvery = time.Second
	// probeEvery is how often the store's writability is tried (one
	// expiring nonce write), and how old the answer /healthz gives can be.
	probeEvery = 2 * time.Second
	// probeKeyID is the key id of the probe's nonces: not a sign-pub, so
	// no request can ever collide with it.
	probeKeyID = "health-probe"
)

// changeOutcomes remembers whether the store has been failing changes:
// the write probe cannot see every stream, and in nats-server a stream
// whose write failed once (a full disk) keeps failing its writes until it
// is reloaded, while the probe's own writes go on.
type changeOutcomes struct {
	mu       sync.Mutex
	failures []time.Time // unavailable answers since the last change that succeeded
}

// changesFailing is how many changes in a row must have failed on the
// store, the last within changesFailingFor, for /healthz to say so.
const (
	changesFailing    = 3
	changesFailingFor = 30 * time.Second
)

// changeStuck is how long a change that its client gave up on must have
// waited on the store to count as failed: the store did not answer.
const changeStuck = 2 * time.Second

// record is api.Options.OnChange: a change that succeeded clears the
// record; one the store could not do, or that waited on it until its
// client gave up, adds to it; a refusal is neither.
func (c *changeOutcomes) record(err error, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gaveUp := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	switch {
	case err == nil:
		c.failures = c.failures[:0]
	case errors.Is(err, store.ErrUnavailable) || gaveUp && took >= changeStuck:
		c.failures = append(c.failures, time.Now())
		if len(c.failures) > changesFailing {
			c.failures = c.failures[1:]
		}
	}
}

// failing reports whether the last changesFailing changes failed on the
// store, the last of them within changesFailingFor.
func (c *changeOutcomes) failing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.failures) >= changesFailing && time.Since(c.failures[len(c.failures)-1]) < changesFailingFor
}

// tightDisk and tightFor: after the free space was below the reserve (or
// tightDisk, whichever is more) within tightFor, the kv health probe also
// writes the users and rooms buckets, whose writes may have failed on the
// full disk and keep failing (kvstore.Probe). Not always: a write there
// every few seconds from every node would keep those streams busy, and
// the scrub judges a replica only between writes.
const (
	tightDisk = 64 << 20
	tightFor  = 10 * time.Minute
)

// healthState is what the health watcher last measured.
type healthState struct {
	changes changeOutcomes
	tightAt atomic.Int64 // UnixNano of the last reading below the reserve (or tightDisk); 0 never

	diskFree atomic.Int64 // least free bytes over the state's file systems; -1 unknown
	diskLow  atomic.Bool

	probeMu  sync.Mutex
	probeAt  time.Time
	probeErr error // the last probe's failure, nil when it wrote
}

// stateDirs are the directories whose file systems hold the node's state.
func (d *Daemon) stateDirs() []string {
	dirs := []string{d.cfg.DataDir, d.cfg.NATSStore}
	if d.cfg.Store == StoreSQLite {
		dirs = append(dirs, filepath.Dir(d.cfg.DB), d.cfg.BlobDir)
	}
	return dirs
}

// checkDisk reads the free space of the state's file systems and updates
// the disk-low flag and the metrics.
func (d *Daemon) checkDisk() {
	least := int64(-1)
	for _, dir := range d.stateDirs() {
		free, err := freeBytes(dir)
		if err != nil {
			continue // a directory not made yet (the blob dir before the first blob)
		}
		if least < 0 || free < least {
			least = free
		}
	}
	d.hs.diskFree.Store(least)
	if least >= 0 && least < max(d.cfg.DiskReserve, tightDisk) {
		d.hs.tightAt.Store(time.Now().UnixNano())
	}
	low := d.cfg.DiskReserve > 0 && least >= 0 && least < d.cfg.DiskReserve
	if low != d.hs.diskLow.Swap(low) {
		if low {
			d.log.Error("free disk space is below the reserve: new room messages and blobs are refused until space is freed",
				"free_bytes", least, "reserve_bytes", d.cfg.DiskReserve)
		} else {
			d.log.Info("free disk space is above the reserve again: accepting new data", "free_bytes", least)
		}
	}
	d.metrics.DiskFree.Set(float64(least))
}

// DiskLow reports whether storing need more bytes would take the free
// space below the reserve (by the last reading).
func (d *Daemon) DiskLow(need int64) bool {
	if d.cfg.DiskReserve <= 0 {
		return false
	}
	free := d.hs.diskFree.Load()
	return free >= 0 && free-need < d.cfg.DiskReserve
}

// probeStore tries one write (a nonce that expires within a minute) unless
// the last try is younger than probeEvery, and returns the last try's
// failure.
func (d *Daemon) probeStore(ctx context.Context) error {
	d.hs.probeMu.Lock()
	defer d.hs.probeMu.Unlock()
	if !d.hs.probeAt.IsZero() && time.Since(d.hs.probeAt) < probeEvery {
		return d.hs.probeErr
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var nonce [16]byte
	rand.Read(nonce[:])
	now := time.Now()
	err := d.store.UseNonce(ctx, probeKeyID, hex.EncodeToString(nonce[:]), now, now.Add(time.Minute))
	if errors.Is(err, store.ErrReplay) {
		err = nil // written before by a try that timed out: the store writes
	}
	// In kv mode the nonces bucket is in memory, so its write says nothing
	// of the disk: also write a record to the usage bucket, on disk, and,
	// after the disk was nearly full, to the buckets the changes need
	// (kvstore.Probe). Seen in an outside run: /healthz 200 with every
	// change timing out after a full disk.
	if err == nil && d.kv != nil {
		at := d.hs.tightAt.Load()
		err = d.kv.Probe(ctx, now, at != 0 && time.Since(time.Unix(0, at)) < tightFor)
	}
	if err != nil && d.hs.probeErr == nil {
		d.log.Error("the store cannot be written: every signed request is refused (fail closed)", "err", err)
	} else if err == nil && d.hs.probeErr != nil {
		d.log.Info("the store can be written again")
	}
	d.hs.probeAt, d.hs.probeErr = time.Now(), err
	return err
}

// watchHealth reads the free space every diskEvery and refreshes the
// health metrics every probeEvery (which tries a store write), until Close.
func (d *Daemon) watchHealth() {
	disk := time.NewTicker(diskEvery)
	defer disk.Stop()
	full := time.NewTicker(probeEvery)
	defer full.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-disk.C:
			d.checkDisk()
		case <-full.C:
			d.health(d.ctx)
		}
	}
}

// health reports the node's health and posture for /healthz, and sets the
// health metrics: not ok, with the first reason that applies, whenever a
// signed request or a new message could not succeed.
func (d *Daemon) health(ctx context.Context) wire.Health {
	h := wire.Health{Status: "ok", Node: d.nodeName(), Version: d.cfg.Version, Posture: wire.Posture{
		BusAuth: string(d.cfg.BusAuth), ACL: d.cfg.BusAuth == BusAuthEnforce, TLS: d.tls != nil, Store: string(d.cfg.Store),
		KVReplicas: d.cfg.KVReplicas, JSSync: string(d.cfg.JSSync), Cluster: d.cfg.clustered(),
		RouteTLS: d.cfg.clustered() && d.cfg.RouteTLSCert != "", DiskReserve: max(d.cfg.DiskReserve, 0),
	}}
	leader, peers := d.eng.MetaLeader()
	h.Posture.MetaLeader, h.Posture.Peers = leader, peers
	h.DiskFree = d.hs.diskFree.Load()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fail := func(reason, msg string) { h.Status, h.Reason, h.Error = "unavailable", reason, msg }
	if leader == "" || !d.eng.Quorum() {
		fail(wire.HealthNoQuorum, "JetStream has no meta leader or quorum (a cluster needs a quorum of its nodes up)")
	} else if _, err := d.store.GetUser(ctx, "health-check"); err != nil && !errors.Is(err, store.ErrNotFound) {
		fail(wire.HealthStoreUnreadable, "store not readable")
	} else if err := d.probeStore(ctx); err != nil {
		fail(wire.HealthStoreUnwritable, "the store cannot be written, so every signed request is refused (see the log)")
	} else if d.hs.changes.failing() {
		fail(wire.HealthStoreUnwritable, "the store has failed the last changes asked of it although it takes the probe's writes: a stream that failed a write (after a full disk) keeps failing until membershipd is restarted")
	} else if !d.eng.JetStreamEnabled() {
		fail(wire.HealthJetStreamOff, "JetStream not enabled")
	} else if !d.streamsReady.Load() {
		fail(wire.HealthStarting, "the shared room stream is not created yet")
	} else if d.hs.diskLow.Load() {
		fail(wire.HealthDiskLow, fmt.Sprintf("free disk space (%d bytes) is below the reserve (%d bytes): new room messages and blobs are refused", h.DiskFree, d.cfg.DiskReserve))
	}
	h.Protocol = wire.Protocol
	h.Deployment = d.deploymentID(ctx)
	d.metrics.SetHealth(h.Reason)
	return h
}

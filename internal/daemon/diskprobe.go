package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// diskProbeEvery is how often every file system of the node's state is
// written and synced: a disk that fails writes (EIO) is noticed within
// it, and the node stops.
const diskProbeEvery = 250 * time.Millisecond

// diskProbeFile is the probe's file in each state directory.
const diskProbeFile = ".unibus-disk-probe"

// probeDisks runs until Close: every diskProbeEvery it writes and syncs a
// byte in each state directory. A disk that answers with an I/O error, or
// that the kernel turned read-only (ext4 does on errors), cannot be
// trusted to keep what is acknowledged nor to read what it holds — an
// outside run saw such a node answer reads of rooms and users as "not
// found" and acknowledge a message that was gone after a remount. So the
// node stops at once (fail closed): it stops serving, Err says why, and
// its supervisor restarts it; on a disk that still fails, the start
// fails. A full disk (ENOSPC) is not such a failure: the reserve and
// /healthz deal with it.
//
// The blob directory is not probed (its listing is the blobs): a disk
// failing under it fails the uploads, answered 503.
func (d *Daemon) probeDisks() {
	dirs := slices.Compact(slices.Sorted(slices.Values(d.stateDirs())))
	dirs = slices.DeleteFunc(dirs, func(dir string) bool { return dir == d.cfg.BlobDir })
	t := time.NewTicker(diskProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		for _, dir := range dirs {
			if err := writeProbe(dir); diskFailed(err) {
				d.log.Error("the disk fails writes: stopping (fail closed); check the disk and the kernel log, then start again", "dir", dir, "err", err)
				d.fail(fmt.Errorf("the disk under %s fails writes (%w): stopped so that nothing more is acknowledged or answered from it", dir, err))
				return
			}
		}
	}
}

// writeProbe writes and syncs one byte in dir.
func writeProbe(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, diskProbeFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte{1})
	serr := f.Sync()
	return errors.Join(werr, serr, f.Close())
}

// diskFailed reports an I/O error or a read-only file system.
func diskFailed(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS)
}

// ackBarrier is the relay's Durable with --js-sync always on the embedded
// engine: a write and sync of the JetStream store's file system, after
// the messages were stored and before their acknowledgements go out.
// JetStream syncs each message before it acknowledges it, but a disk
// that fails in that instant was seen to acknowledge messages that were
// gone after a remount (docs/RELIABILITY.md, "A disk that fails
// writes"); a sync that starts after them and succeeds shows the file
// system still keeps what it was given. nil otherwise: with an interval
// policy nothing is synced before the acknowledgement anyway; in a
// cluster a message is acknowledged once a quorum of nodes holds it, so
// one node's disk failing loses nothing; and an external NATS's disks are
// not this node's.
func (d *Daemon) ackBarrier() func() error {
	if d.node == nil || d.cfg.JSSync != JSSyncAlways || d.cfg.clustered() {
		return nil
	}
	dir := d.cfg.NATSStore
	return func() error { return writeProbe(dir) }
}

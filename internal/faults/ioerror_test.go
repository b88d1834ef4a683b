package faults

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// TestWriteErrors runs one node (SQLite store, then kv store; --js-sync
// always) whose whole state is on an ext4 file system of its own, under
// the power-cut load, and makes the disk fail: the file system is shut
// down with FS_IOC_SHUTDOWN while the process keeps running, so every
// later write and fsync of the node fails with EIO. The load goes on; the
// test counts what was acknowledged before and after the fault and how
// soon /healthz turns 503. Then the process is killed, the file system
// mounted again, the node restarted and everything read back: nothing
// acknowledged may be missing, before the fault or in the milliseconds
// after it (the rule of --js-sync always; docs/RELIABILITY.md, "A disk
// that fails writes"), no refusal may say the admin or the room does not
// exist, and the node must have stopped or said it is unhealthy.
func TestWriteErrors(t *testing.T) { writeErrorsTest(t) }

func writeErrorsTest(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("I/O errors: seconds per trial")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	for _, st := range []string{"sqlite", "kv"} {
		t.Run(st, func(t *testing.T) {
			var rs []Result
			for k := range trials(t) {
				r, unhealthy := writeErrors(t, bin, st, k+1)
				rs = append(rs, r)
				if lost(r) > 0 {
					t.Errorf("a write that was acknowledged is missing after the disk failed (js-sync always): %v", r)
				}
				if wrong := wrongAnswers(r); wrong != "" {
					t.Errorf("--store %s: a disk that fails was answered as if the admin or the room did not exist (%s), not 503: %v", st, wrong, r)
				}
				if !unhealthy {
					t.Errorf("--store %s: /healthz kept answering 200 for %v after every write of the node's disk began to fail: %v", st, healthWait, r)
				}
			}
			report(t, rs)
		})
	}
}

// wrongAnswers lists the refusals after the fault that said something
// false about the state (the admin unknown or revoked, the room not
// found) instead of 503: a client may act on them as final.
func wrongAnswers(r Result) string {
	if r.After == nil {
		return ""
	}
	var wrong []string
	for k, n := range r.After.Failed {
		if strings.Contains(k, "401") || strings.Contains(k, "404") || strings.Contains(k, "revoked") {
			wrong = append(wrong, fmt.Sprintf("%d× %s", n, k))
		}
	}
	sort.Strings(wrong)
	return strings.Join(wrong, ", ")
}

// healthWait is how long a node whose disk fails may keep answering 200:
// the store probe runs every 5 s.
const healthWait = 12 * time.Second

func writeErrors(t *testing.T, bin, st string, trial int) (Result, bool) {
	t.Helper()
	r := Result{Experiment: "disk failing writes (EIO), one node, " + st, Policy: "always", Trial: trial}
	work := t.TempDir()
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := mountLoop(t, filepath.Join(work, "disk.img"), mnt, 512<<20)
	data := filepath.Join(disk.mnt, "data")
	args := []string{"--http-port", "0", "--nats-port", "0", "--log-format", "json", "--data-dir", data, "--store", st, "--js-sync", "always", "--user-rooms", "0"}

	bus := launch(t, bin, work, args)
	admFile := filepath.Join(work, "admin.id")
	copyFile(t, filepath.Join(data, "admin.id"), admFile)
	adm, err := identity.Load(admFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := func() client.Config {
		return client.Config{Identity: adm, Servers: []string{bus.HTTPURL}, NATS: []string{bus.NATSURL}}
	}
	unhealthy := false
	var failedAt time.Time
	a, room := loadAround(ctx, t, cfg(), 2*time.Second, func() {
		disk.shutdown(t) // the process keeps running: every write from now on fails
		failedAt = time.Now()
	}, func(func(string)) {
		// The load goes on while /healthz is watched: until it is 503
		// and 3 s more (what is acknowledged then is what a client of a
		// node known to be failing is told), or healthWait.
		deadline := failedAt.Add(healthWait)
		for time.Now().Before(deadline) {
			code, h := harness.Health(bus.HTTPURL)
			select {
			case <-bus.Exited():
				r.Health = fmt.Sprintf("the process exited %.1f s after the fault", time.Since(failedAt).Seconds())
				unhealthy = true
				return
			default:
			}
			if code != http.StatusOK {
				r.Health = fmt.Sprintf("%d %s %.1f s after the fault", code, h.Reason, time.Since(failedAt).Seconds())
				if code == 0 {
					r.Health = fmt.Sprintf("no answer %.1f s after the fault", time.Since(failedAt).Seconds())
				}
				unhealthy = true
				time.Sleep(3 * time.Second) // the load goes on against the failing node
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		r.Health = fmt.Sprintf("still 200 %v after the fault", healthWait)
	})
	bus.Kill()

	disk.remount(t)
	onDisk := recordsOnDisk(t, filepath.Join(data, "jetstream"), a)
	started := time.Now()
	bus = launch(t, bin, work, args)
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		if code, h := harness.Health(bus.HTTPURL); code != 200 {
			return fmt.Errorf("%d %s", code, h.Error)
		}
		return nil
	}, "healthy after the restart")
	r.RecoverSec = time.Since(started).Seconds()
	verify(ctx, t, cfg(), room, a, &r)
	if r.After != nil && r.After.LostMsgs > 0 {
		// Where a lost message went: its record reached the disk (a block
		// file holds its id after the remount) and the restarted server
		// dropped it, or it never reached the disk.
		// The last message acknowledged before the fault is the control:
		// its record must be found.
		var where []string
		for _, m := range append(lastBefore(a), a.msgsAfter...) {
			if on, ok := onDisk[m]; ok {
				where = append(where, fmt.Sprintf("%s (%s) on disk after the remount: %v", m, a.msgIDs[m], on))
			}
		}
		r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + "the last acknowledged before the fault and those after: " + strings.Join(where, ", ")
	}
	bus.Stop(t)
	return r, unhealthy
}

// lastBefore is the last message acknowledged before the fault (none if
// there is none).
func lastBefore(a acked) []string {
	after := map[string]bool{}
	for _, m := range a.msgsAfter {
		after[m] = true
	}
	for i := len(a.msgs) - 1; i >= 0; i-- {
		if !after[a.msgs[i]] {
			return []string{a.msgs[i]}
		}
	}
	return nil
}

// recordsOnDisk reports, for the last message acknowledged before the
// fault and each message acknowledged after it,
// whether a block file under dir (the JetStream store, the file system
// just remounted) holds its message id: whether its record reached the
// disk.
func recordsOnDisk(t *testing.T, dir string, a acked) map[string]bool {
	t.Helper()
	var blocks [][]byte
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".blk") {
			return err
		}
		b, err := os.ReadFile(path)
		blocks = append(blocks, b)
		return err
	})
	if err != nil {
		t.Logf("reading the block files after the remount: %v", err)
	}
	on := map[string]bool{}
	for _, m := range append(lastBefore(a), a.msgsAfter...) {
		id := a.msgIDs[m]
		on[m] = false
		for _, b := range blocks {
			if id != "" && bytes.Contains(b, []byte(id)) {
				on[m] = true
				break
			}
		}
	}
	return on
}

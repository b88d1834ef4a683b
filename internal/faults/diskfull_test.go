package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// Full-disk experiments: each node's state is on a small ext4 file system
// of its own (diskSize), kept free above the node's reserve (diskReserve).
// Under the power-cut load, a file written from outside the node fills the
// disk in two steps — first into the reserve (half of it left), then to
// the last block — and is removed again. Quotas are off: the disk is
// filled by something other than the node's users.
const (
	diskSize    = 256 << 20
	diskReserve = 32 << 20
	// diskHold is how long each step of the fault lasts under the load.
	diskHold = 5 * time.Second
	// recoverWait bounds the wait for a node to be healthy again once
	// space is freed, before it is restarted.
	recoverWait = 20 * time.Second
)

// diskFlags are the flags of a node on a small disk.
var diskFlags = []string{"--disk-reserve", strconv.Itoa(diskReserve), "--user-rooms", "0", "--user-msg-bytes", "0", "--user-blob-bytes", "0"}

// TestDiskFull fills the disk of one kv-store node (--js-sync always).
// While the disk is in the reserve, /healthz must say disk_low, messages
// must be refused (507) and the control plane must go on; while it is
// full, nothing may be acknowledged that is lost, and the node must say
// it is not ok. Once space is freed: how long until the node is healthy
// again, and after a restart everything acknowledged must be there.
func TestDiskFull(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("full disk: seconds per trial")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	var rs []Result
	for k := range trials(t) {
		rs = append(rs, diskFull(t, bin, k+1))
	}
	judgeDiskFull(t, rs)
	report(t, rs)
}

// TestDiskFullCluster is TestDiskFull on a three-node R3 cluster, every
// node's disk filled at once.
func TestDiskFullCluster(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	var rs []Result
	for k := range trials(t) {
		rs = append(rs, diskFullCluster(t, k+1))
	}
	judgeDiskFull(t, rs)
	report(t, rs)
}

// judgeDiskFull fails the test on a loss under --js-sync always, and on a
// node that did not say it was in trouble.
func judgeDiskFull(t *testing.T, rs []Result) {
	t.Helper()
	for _, r := range rs {
		if r.LostMsgs > 0 || r.LostUsers > 0 || r.LostRooms > 0 || r.DupMsgs > 0 {
			t.Errorf("an acknowledged write is missing after the disk was full (js-sync always): %v", r)
		}
		for _, step := range strings.Split(r.Health, "; ") {
			switch {
			case strings.HasPrefix(step, "in the reserve") && !strings.Contains(step, "503 disk_low"):
				t.Errorf("/healthz did not say disk_low with the disk in the reserve: %v", r)
			case strings.HasPrefix(step, "full") && strings.Contains(step, ": 200 at"):
				t.Errorf("/healthz said ok with the disk full: %v", r)
			case strings.HasPrefix(step, "freed: 200") && !strings.Contains(step, "503") && r.After != nil && strings.HasSuffix(r.After.Acked["3 freed"], " 0 users, 0 rooms"):
				t.Errorf("/healthz said ok once space was freed, yet no user or room could be added in the seconds after (the control plane's writes fail until a restart): %v", r)
			}
		}
	}
}

// smallDisk is the loop disk that holds one node's state, and fills.
type smallDisk struct {
	disk *loopDisk
}

// filler is the file that fills the disk from outside the node's state.
func (d smallDisk) filler() string { return filepath.Join(d.disk.mnt, "filler") }

// fill writes the filler until leave bytes are free (0: until the file
// system refuses more).
func (d smallDisk) fill(t *testing.T, leave int64) {
	t.Helper()
	f, err := os.OpenFile(d.filler(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		free := d.freeBytes(t) // root's view: membershipd runs as root here
		if free <= leave {
			break
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, unix.ENOSPC) {
		t.Fatal(err)
	}
}

// freeBytes is what is free on the disk for root.
func (d smallDisk) freeBytes(t *testing.T) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(d.disk.mnt, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * int64(st.Bsize)
}

// free removes the filler.
func (d smallDisk) free(t *testing.T) {
	t.Helper()
	if err := os.Remove(d.filler()); err != nil {
		t.Fatal(err)
	}
}

// healthOf reads every node's /healthz: "200", "503 disk_low", "no answer";
// the nodes' answers joined with "/" when they differ.
func healthOf(urls []string) string {
	var hs []string
	for _, u := range urls {
		code, h := harness.Health(u)
		s := strconv.Itoa(code)
		switch {
		case code == 0:
			s = "no answer"
		case h.Reason != "":
			s += " " + h.Reason
		}
		hs = append(hs, s)
	}
	for _, h := range hs[1:] {
		if h != hs[0] {
			return strings.Join(hs, "/")
		}
	}
	return hs[0]
}

// watchHealth polls the nodes' /healthz for d and returns every distinct
// answer in order with the time it was first seen ("503 disk_low at 1.2 s").
func watchHealth(urls []string, d time.Duration) string {
	var seen []string
	last := ""
	start := time.Now()
	for time.Since(start) < d {
		if h := healthOf(urls); h != last {
			seen = append(seen, fmt.Sprintf("%s at %.1f s", h, time.Since(start).Seconds()))
			last = h
		}
		time.Sleep(250 * time.Millisecond)
	}
	return strings.Join(seen, ", ")
}

// fillAndFree is the fault and what follows it, under the load: every disk
// into the reserve, then full, then freed; r.Health gets what /healthz
// said at each step and how long after the space was freed every node
// was healthy again (or that it was not, within recoverWait).
// freedWatch is how long /healthz is watched once it says 200 after the
// space was freed, while the load goes on.
const freedWatch = 8 * time.Second

func fillAndFree(t *testing.T, disks []smallDisk, urls []string, r *Result) (fault func(), during func(phase func(string))) {
	var steps []string
	fault = func() {
		for _, d := range disks {
			d.fill(t, diskReserve/2)
		}
	}
	during = func(phase func(string)) {
		phase("1 in the reserve")
		steps = append(steps, "in the reserve: "+watchHealth(urls, diskHold))
		least := int64(-1)
		for _, d := range disks {
			d.fill(t, 0)
			if f := d.freeBytes(t); least < 0 || f < least {
				least = f
			}
		}
		phase("2 full") // from when every disk is full
		steps = append(steps, fmt.Sprintf("full (%d KiB free): %s", least>>10, watchHealth(urls, diskHold)))
		for _, d := range disks {
			d.free(t)
		}
		phase("3 freed")
		freed := time.Now()
		recovered := false
		for time.Since(freed) < recoverWait {
			if healthOf(urls) == "200" {
				recovered = true
				at := time.Since(freed).Seconds()
				// The load goes on against the recovered node, and
				// /healthz is watched meanwhile: a node whose changes keep
				// failing must say so within these seconds.
				steps = append(steps, fmt.Sprintf("freed: 200 after %.1f s, then %s", at, watchHealth(urls, freedWatch)))
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if !recovered {
			steps = append(steps, fmt.Sprintf("freed: %s after %v, restarted", healthOf(urls), recoverWait))
		}
		r.Health = strings.Join(steps, "; ")
	}
	return fault, during
}

func diskFull(t *testing.T, bin string, trial int) Result {
	t.Helper()
	r := Result{Experiment: "full disk, one node, kv", Policy: "always", Trial: trial}
	work := t.TempDir()
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := smallDisk{mountLoop(t, filepath.Join(work, "disk.img"), mnt, diskSize)}
	data := filepath.Join(mnt, "data")
	args := append([]string{"--http-port", "0", "--nats-port", "0", "--log-format", "json", "--data-dir", data,
		"--store", "kv", "--js-sync", "always"}, diskFlags...)
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
	harness.EventuallyNoError(t, time.Minute, func() error {
		if h := healthOf([]string{bus.HTTPURL}); h != "200" {
			return errors.New(h)
		}
		return nil
	}, "healthy before the fault")
	fault, during := fillAndFree(t, []smallDisk{disk}, []string{bus.HTTPURL}, &r)
	a, room := loadAround(ctx, t, cfg(), 2*time.Second, fault, during)

	bus.Stop(t)
	started := time.Now()
	bus = launch(t, bin, work, args)
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		if code, h := harness.Health(bus.HTTPURL); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, h.Error)
		}
		return nil
	}, "healthy after the restart")
	r.RecoverSec = time.Since(started).Seconds()
	verify(ctx, t, cfg(), room, a, &r)
	bus.Stop(t)
	return r
}

func diskFullCluster(t *testing.T, trial int) Result {
	t.Helper()
	r := Result{Experiment: "full disk, three nodes, R3", Policy: "always", Trial: trial}
	c := harness.NewCluster(t, 3, append([]string{"--js-sync", "always"}, diskFlags...)...)
	work := t.TempDir()
	var disks []smallDisk
	var urls []string
	for i, n := range c.Nodes {
		disks = append(disks, smallDisk{mountLoop(t, filepath.Join(work, fmt.Sprintf("n%d.img", i+1)), n.Dir, diskSize)})
		urls = append(urls, n.HTTPURL())
	}
	for i := range c.Nodes {
		c.Start(t, i)
	}
	c.WaitHealthy(t, 0, 1, 2)
	adm, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c.AddUser(t, 0, "root", "admin", adm)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := client.Config{Identity: adm, Servers: c.SeedsHTTP(), NATS: c.SeedsNATS()}
	fault, during := fillAndFree(t, disks, urls, &r)
	a, room := loadAround(ctx, t, cfg, 2*time.Second, fault, during)

	for _, n := range c.Nodes {
		n.Bus.Stop(t)
	}
	started := time.Now()
	for i := range c.Nodes {
		c.Start(t, i)
	}
	c.WaitHealthy(t, 0, 1, 2)
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		cl, err := client.Dial(ctx, cfg)
		if err != nil {
			return err
		}
		defer cl.Close()
		_, err = cl.ListRooms(ctx)
		return err
	}, "the control plane serving after the restart")
	r.RecoverSec = time.Since(started).Seconds()
	verify(ctx, t, cfg, room, a, &r)
	return r
}

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// Result is one experiment's count: what clients were told was done, and
// what the restarted node has.
type Result struct {
	Experiment string  `json:"experiment"`
	Policy     string  `json:"policy"` // membershipd --js-sync
	Trial      int     `json:"trial"`
	AckedMsgs  int     `json:"acked_msgs"`
	LostMsgs   int     `json:"lost_msgs"`
	DupMsgs    int     `json:"dup_msgs"`
	AckedUsers int     `json:"acked_users"`
	LostUsers  int     `json:"lost_users"`
	AckedRooms int     `json:"acked_rooms"`
	LostRooms  int     `json:"lost_rooms"`
	RecoverSec float64 `json:"recover_seconds"` // restart to healthy
	Note       string  `json:"note,omitempty"`
}

func (r Result) String() string {
	return fmt.Sprintf("%s js-sync=%s #%d: msgs %d acked, %d lost, %d duplicated; users %d acked, %d lost; rooms %d acked, %d lost; healthy %.1f s after restart%s",
		r.Experiment, r.Policy, r.Trial, r.AckedMsgs, r.LostMsgs, r.DupMsgs, r.AckedUsers, r.LostUsers, r.AckedRooms, r.LostRooms, r.RecoverSec, noteOf(r.Note))
}

func noteOf(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

// trials is how many times each experiment runs (UNIBUS_FAULT_TRIALS, 1).
func trials(t *testing.T) int {
	v := os.Getenv("UNIBUS_FAULT_TRIALS")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("UNIBUS_FAULT_TRIALS=%q: want a positive number", v)
	}
	return n
}

// report logs the results and writes them to UNIBUS_FAULT_OUT (JSON).
func report(t *testing.T, rs []Result) {
	for _, r := range rs {
		t.Log(r)
	}
	if out := os.Getenv("UNIBUS_FAULT_OUT"); out != "" {
		b, _ := json.MarshalIndent(rs, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// requireRoot skips unless the suite was asked for (UNIBUS_FAULTS=1), and
// on a machine where the experiments cannot run: not root, or no loop
// devices (a container without /dev/loop-control). Development machines
// and CI run them.
func requireRoot(t *testing.T) {
	if os.Getenv("UNIBUS_FAULTS") == "" {
		t.Skip("fault injection runs with UNIBUS_FAULTS=1, on its own: ./test runs it after the other packages, so that its clusters and loads do not share the two cores with theirs")
	}
	if os.Geteuid() != 0 {
		t.Skip("fault injection needs root (loop devices, mounts, FS_IOC_SHUTDOWN); CI runs as root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("fault injection needs loop devices: %v", err)
	}
}

// TestPowerCut runs a single SQLite node whose whole state is on an ext4
// file system of its own (a loop device), under load — messages sent one
// at a time, users added, rooms created, each counted once acknowledged —
// then cuts the power: the process is frozen (SIGSTOP: no acknowledgement
// leaves it after this instant), the file system shut down with
// FS_IOC_SHUTDOWN without flushing the journal (what was not on the disk
// is gone, as in xfstests' power-failure tests), and the process killed. The file system is mounted again (journal replay), the node
// restarted, and everything read back. With --js-sync always nothing
// acknowledged may be lost; with 2m the loss is measured.
func TestPowerCut(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("power cut: seconds per trial")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	var rs []Result
	for _, policy := range []string{"always", "2m"} {
		for k := range trials(t) {
			r := powerCut(t, bin, policy, k+1)
			rs = append(rs, r)
			if policy == "always" && (r.LostMsgs > 0 || r.LostUsers > 0 || r.LostRooms > 0 || r.DupMsgs > 0) {
				t.Errorf("js-sync always lost or duplicated acknowledged writes: %v", r)
			}
		}
	}
	report(t, rs)
}

func powerCut(t *testing.T, bin, policy string, trial int) Result {
	t.Helper()
	r := Result{Experiment: "power cut, one node", Policy: policy, Trial: trial}
	work := t.TempDir()
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := mountLoop(t, filepath.Join(work, "disk.img"), mnt, 512<<20)
	data := filepath.Join(disk.mnt, "data")
	args := []string{"--http-port", "0", "--nats-port", "0", "--log-format", "json", "--data-dir", data, "--js-sync", policy}

	bus := launch(t, bin, work, args)
	// The admin identity lives on the disk that loses power: keep a copy.
	admFile := filepath.Join(work, "admin.id")
	copyFile(t, filepath.Join(data, "admin.id"), admFile)
	adm, err := identity.Load(admFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seeds := func() client.Config {
		return client.Config{Identity: adm, Servers: []string{bus.HTTPURL}, NATS: []string{bus.NATSURL}}
	}
	acked, room := load(ctx, t, seeds(), func() {
		freeze(t, bus)
		disk.shutdown(t)
		bus.Kill()
	})

	// Power back: mount (journal replay), restart, read everything back.
	disk.remount(t)
	started := time.Now()
	bus = launch(t, bin, work, args)
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		if code, h := harness.Health(bus.HTTPURL); code != 200 {
			return fmt.Errorf("%d %s", code, h.Error)
		}
		return nil
	}, "healthy after the restart")
	r.RecoverSec = time.Since(started).Seconds()
	verify(ctx, t, seeds(), room, acked, &r)
	bus.Stop(t)
	return r
}

// TestPowerCutCluster cuts the power of all three nodes of a cluster at
// once (each node's state on its own ext4 loop device), under the same
// load as TestPowerCut, then powers them back.
func TestPowerCutCluster(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	var rs []Result
	for _, policy := range []string{"always", "2m"} {
		for k := range trials(t) {
			r := powerCutCluster(t, policy, k+1)
			rs = append(rs, r)
			if policy == "always" && (r.LostMsgs > 0 || r.LostUsers > 0 || r.LostRooms > 0 || r.DupMsgs > 0) {
				t.Errorf("js-sync always lost or duplicated acknowledged writes: %v", r)
			}
		}
	}
	report(t, rs)
}

func powerCutCluster(t *testing.T, policy string, trial int) Result {
	t.Helper()
	r := Result{Experiment: "power cut, three nodes", Policy: policy, Trial: trial}
	c := harness.NewCluster(t, 3, "--js-sync", policy)
	work := t.TempDir()
	var disks []*loopDisk
	for i, n := range c.Nodes {
		disks = append(disks, mountLoop(t, filepath.Join(work, fmt.Sprintf("n%d.img", i+1)), n.Dir, 512<<20))
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
	acked, room := load(ctx, t, cfg, func() {
		for _, n := range c.Nodes {
			freeze(t, n.Bus)
		}
		for _, d := range disks {
			d.shutdown(t)
		}
		for i := range c.Nodes {
			c.Kill(i)
		}
	})
	for _, d := range disks {
		d.remount(t)
	}
	started := time.Now()
	for i := range c.Nodes {
		c.Start(t, i)
	}
	c.WaitHealthy(t, 0, 1, 2)
	r.RecoverSec = time.Since(started).Seconds()
	// Healthy means a meta leader; the buckets' and the stream's leaders
	// may take a few seconds more. Under a policy that loses writes the
	// admin user itself may be gone (it was added seconds before the
	// cut): then it is added again, and the loss noted.
	serving := func() error {
		cl, err := client.Dial(ctx, cfg)
		if err != nil {
			return err
		}
		defer cl.Close()
		_, err = cl.ListRooms(ctx)
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = harness.Wait(wctx, serving)
	wcancel()
	if errors.Is(err, client.ErrRevoked) {
		r.Note = "the admin user itself was lost, and added again to read the rest"
		c.AddUser(t, 0, "root", "admin", adm)
	}
	harness.EventuallyNoError(t, 2*time.Minute, serving, "the control plane serving after the restart")
	r.RecoverSec = time.Since(started).Seconds()
	verify(ctx, t, cfg, room, acked, &r)
	return r
}

// acked is what the load was told was done.
type acked struct {
	msgs, users, rooms []string
}

// load creates a room, then sends messages one at a time, adds users and
// creates rooms concurrently for 3 s, counting what was acknowledged; then
// it calls cut (the fault) and stops.
func load(ctx context.Context, t *testing.T, cfg client.Config, cut func()) (acked, string) {
	t.Helper()
	admin, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	room, err := admin.CreateRoom(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var a acked
	stop := make(chan struct{})
	var wg sync.WaitGroup
	op := func(f func(ctx context.Context, i int) (string, error), into *[]string) {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			octx, ocancel := context.WithTimeout(ctx, 3*time.Second)
			v, err := f(octx, i)
			ocancel()
			if err == nil {
				mu.Lock()
				*into = append(*into, v)
				mu.Unlock()
			}
		}
	}
	wg.Add(3)
	go op(func(ctx context.Context, i int) (string, error) {
		text := fmt.Sprintf("m-%06d", i)
		_, err := admin.Send(ctx, room.ID, "", []byte(text))
		return text, err
	}, &a.msgs)
	go op(func(ctx context.Context, i int) (string, error) {
		id, err := identity.Generate()
		if err != nil {
			return "", err
		}
		h := fmt.Sprintf("u-%d", i)
		_, err = admin.AddUser(ctx, h, id.SignPub().String(), client.RoleMember)
		return h, err
	}, &a.users)
	go op(func(ctx context.Context, i int) (string, error) {
		rm, err := admin.CreateRoom(ctx, "r")
		return rm.ID, err
	}, &a.rooms)

	time.Sleep(3 * time.Second) // the load's length: what the experiment measures, not a wait for a condition
	cut()
	close(stop)
	wg.Wait()
	return a, room.ID
}

// verify reads the room from the start and looks every acknowledged user
// and room up, and counts what is missing or repeated.
func verify(ctx context.Context, t *testing.T, cfg client.Config, room string, a acked, r *Result) {
	t.Helper()
	r.AckedMsgs, r.AckedUsers, r.AckedRooms = len(a.msgs), len(a.users), len(a.rooms)
	admin, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	seen := map[string]int{}
	var reports []string
	var lmu sync.Mutex
	last := time.Now()
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- admin.Listen(lctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) {
			lmu.Lock()
			reports = append(reports, err.Error())
			lmu.Unlock()
		}}, func(m client.Message) {
			lmu.Lock()
			seen[string(m.Data)]++
			last = time.Now()
			lmu.Unlock()
		})
	}()
	harness.Eventually(t, 2*time.Minute, func() bool {
		lmu.Lock()
		defer lmu.Unlock()
		return time.Since(last) > 3*time.Second // nothing more for 3 s: the history is read
	}, "reading the room's history")
	lcancel()
	var ae *client.APIError
	if err := <-done; errors.Is(err, client.ErrRemoved) || errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + "the load's room itself was lost"
	} else if err != nil {
		t.Errorf("listen after the restart: %v", err)
	}
	lmu.Lock()
	defer lmu.Unlock()
	for _, m := range a.msgs {
		if seen[m] == 0 {
			r.LostMsgs++
		}
	}
	for _, c := range seen {
		if c > 1 {
			r.DupMsgs += c - 1
		}
	}
	all, err := admin.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, x := range all {
		have[x.Handle] = true
	}
	for _, h := range a.users {
		if !have[h] {
			r.LostUsers++
		}
	}
	rl, err := admin.ListRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have = map[string]bool{}
	for _, x := range rl {
		have[x.ID] = true
	}
	for _, id := range a.rooms {
		if !have[id] {
			r.LostRooms++
		}
	}
	if len(reports) > 0 {
		r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + fmt.Sprintf("the reader reported %d problems, first: %s", len(reports), reports[0])
	}
}

// freeze stops the process at once (SIGSTOP), the instant of the power
// cut: it sends no acknowledgement after it. The file system is shut down
// next, then the process killed. (Shutting the file system down first
// would let the still-running server acknowledge a write whose fsync just
// failed — something a machine that lost its power cannot do.)
func freeze(t *testing.T, b *harness.Bus) {
	t.Helper()
	if err := unix.Kill(b.PID(), unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

func launch(t *testing.T, bin, dir string, args []string) *harness.Bus {
	t.Helper()
	b := harness.LaunchBus(t, bin, dir, nil, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

func dial(ctx context.Context, t *testing.T, id *identity.Identity, b *harness.Bus) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{b.HTTPURL}, NATS: []string{b.NATSURL}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// loopDisk is an ext4 file system on a loop device, mounted at mnt.
type loopDisk struct {
	img, mnt string
}

// mountLoop makes an ext4 image of size bytes and mounts it on the
// directory mnt, which must exist; it is unmounted at the end of the test.
func mountLoop(t *testing.T, img, mnt string, size int64) *loopDisk {
	t.Helper()
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", img)
	d := &loopDisk{img: img, mnt: mnt}
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	return d
}

// fsIocShutdown is FS_IOC_SHUTDOWN, _IOR('X', 125, __u32); with
// fsShutdownNoLogFlush the file system stops at once, and what was not on
// the disk (page cache, the journal's uncommitted tail) is lost.
const (
	fsIocShutdown        = 0x8004587d
	fsShutdownNoLogFlush = 0x2
)

// shutdown cuts the power of the file system.
func (d *loopDisk) shutdown(t *testing.T) {
	t.Helper()
	fd, err := unix.Open(d.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags := uint32(fsShutdownNoLogFlush)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		t.Fatalf("FS_IOC_SHUTDOWN: %v", errno)
	}
}

// remount unmounts the shut-down file system and mounts it again, which
// replays its journal as after a power failure.
func (d *loopDisk) remount(t *testing.T) {
	t.Helper()
	harness.EventuallyNoError(t, 30*time.Second, func() error {
		out, err := exec.Command("umount", d.mnt).CombinedOutput()
		if err != nil {
			return fmt.Errorf("umount: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}, "unmount the shut-down file system")
	run(t, "mount", "-o", "loop", d.img, d.mnt)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

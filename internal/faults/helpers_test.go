package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
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
	// After is what was acknowledged, lost and refused after the fault
	// began, for a fault the node keeps running through (I/O errors, a
	// full disk); nil for a power cut.
	After *AfterFault `json:"after_fault,omitempty"`
	// Health is what /healthz said during the fault ("503 store_unwritable
	// after 2.1 s"), for a fault the node keeps running through.
	Health string `json:"health,omitempty"`
	Note   string `json:"note,omitempty"`
}

// AfterFault counts the operations acknowledged after the fault began,
// those of them missing afterwards, and the operations that failed then,
// by what the client was told.
type AfterFault struct {
	Msgs      int            `json:"msgs"`
	LostMsgs  int            `json:"lost_msgs"`
	Users     int            `json:"users"`
	LostUsers int            `json:"lost_users"`
	Rooms     int            `json:"rooms"`
	LostRooms int            `json:"lost_rooms"`
	Failed    map[string]int `json:"failed"`
	// Acked is what was acknowledged in each phase of the fault, when the
	// experiment names them ("full": "0 msgs, 3 users, 1 rooms").
	Acked map[string]string `json:"acked_by_phase,omitempty"`
}

// Lost is every operation acknowledged after the fault and missing.
func (a *AfterFault) Lost() int { return a.LostMsgs + a.LostUsers + a.LostRooms }

func (r Result) String() string {
	s := fmt.Sprintf("%s js-sync=%s #%d: msgs %d acked, %d lost, %d duplicated; users %d acked, %d lost; rooms %d acked, %d lost; healthy %.1f s after restart",
		r.Experiment, r.Policy, r.Trial, r.AckedMsgs, r.LostMsgs, r.DupMsgs, r.AckedUsers, r.LostUsers, r.AckedRooms, r.LostRooms, r.RecoverSec)
	if a := r.After; a != nil {
		keys := make([]string, 0, len(a.Failed))
		for k := range a.Failed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var failed []string
		for _, k := range keys {
			failed = append(failed, fmt.Sprintf("%d× %s", a.Failed[k], k))
		}
		s += fmt.Sprintf("; after the fault: msgs %d acked, %d lost; users %d acked, %d lost; rooms %d acked, %d lost; refused: %s",
			a.Msgs, a.LostMsgs, a.Users, a.LostUsers, a.Rooms, a.LostRooms, strings.Join(failed, ", "))
		if len(a.Acked) > 0 {
			var ps []string
			for p, c := range a.Acked {
				ps = append(ps, p+": "+c)
			}
			sort.Strings(ps)
			s += "; acknowledged by phase: " + strings.Join(ps, "; ")
		}
	}
	if r.Health != "" {
		s += "; /healthz: " + r.Health
	}
	return s + noteOf(r.Note)
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

// report logs the results and writes them to UNIBUS_FAULT_OUT (JSON):
// one array with every experiment's results of this run of the suite.
func report(t *testing.T, rs []Result) {
	for _, r := range rs {
		t.Log(r)
	}
	out := os.Getenv("UNIBUS_FAULT_OUT")
	if out == "" {
		return
	}
	reported.Lock()
	defer reported.Unlock()
	reported.all = append(reported.all, rs...)
	b, _ := json.MarshalIndent(reported.all, "", "  ")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Error(err)
	}
}

// reported is every result reported in this run, for UNIBUS_FAULT_OUT.
var reported struct {
	sync.Mutex
	all []Result
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

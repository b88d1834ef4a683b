package daemon_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// metricsText is the node's /metrics page.
func metricsText(t *testing.T, b *bus) string {
	t.Helper()
	resp, err := http.Get(b.d.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(m)
}

// waitHealth waits until /healthz answers code with reason.
func waitHealth(t *testing.T, b *bus, code int, reason string) wire.Health {
	t.Helper()
	var h wire.Health
	harness.EventuallyNoError(t, 20*time.Second, func() error {
		var got int
		got, h = harness.Health(b.d.HTTPURL())
		if got != code || h.Reason != reason {
			return errors.New(http.StatusText(got) + " " + h.Reason + ": " + h.Error)
		}
		return nil
	}, "/healthz %d %q", code, reason)
	return h
}

// TestDiskReserve: below the disk reserve, /healthz is 503 disk_low and
// the metrics say so; new data (a room message, a blob) is refused with
// 507 and nothing is stored, while the control plane's own writes (signed
// requests, membership) go on in the reserve.
func TestDiskReserve(t *testing.T) { forEachStore(t, testDiskReserve) }

func testDiskReserve(t *testing.T, kind storeKind) {
	// A reserve larger than any disk: the node is always below it.
	b := startBus(t, storeOption(kind), withConfig(func(c *daemon.Config) { c.DiskReserve = 1 << 60 }))
	ctx := ctxT(t)
	h := waitHealth(t, b, http.StatusServiceUnavailable, wire.HealthDiskLow)
	if h.Posture.DiskReserve != 1<<60 || h.DiskFree <= 0 || !strings.Contains(h.Error, "reserve") {
		t.Errorf("health %+v: want the reserve, the free space and a message", h)
	}
	m := metricsText(t, b)
	for _, want := range []string{`unibus_degraded{reason="disk_low"} 1`, `unibus_degraded{reason="store_unwritable"} 0`, "unibus_healthy 0", "unibus_disk_free_bytes "} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The control plane works: signed requests, a room, a member.
	_, alice := b.user(t, "alice")
	room, err := alice.CreateRoom(ctx, "full")
	if err != nil {
		t.Fatalf("create a room below the reserve: %v", err)
	}
	// New data is refused, with a clear error, and nothing is stored.
	if _, err := alice.Send(ctx, room.ID, "", []byte("hello")); !errors.Is(err, client.ErrDiskFull) {
		t.Fatalf("send below the reserve: %v, want ErrDiskFull", err)
	}
	if n := sharedMsgs(t, b, room.ID); n != 0 {
		t.Fatalf("%d messages stored below the reserve", n)
	}
	_, err = alice.PutBlob(ctx, room.ID, bytes.NewReader(make([]byte, 1000)), client.BlobMeta{Name: "x"}, nil)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusInsufficientStorage || ae.Code != wire.CodeDiskFull {
		t.Fatalf("blob upload below the reserve: %v, want 507 %s", err, wire.CodeDiskFull)
	}
	if kind == daemon.StoreSQLite {
		if left := blobFiles(t, b); len(left) != 0 {
			t.Fatalf("a refused upload left %v", left)
		}
	}
	if !strings.Contains(metricsText(t, b), `unibus_relay_messages_total{result="disk_full"} 1`) {
		t.Error("the refused message is not counted as disk_full")
	}
}

// TestFullDisk fills a real (tmpfs) file system under a SQLite node.
// With no reserve, the store's writes fail: every signed request is 503
// and /healthz says store_unwritable (it said ok while every request
// failed, once). With a reserve, the node reports disk_low before the
// disk is full and the control plane keeps working in the reserve. Once
// space is freed the node is ok again, and nothing that was acknowledged
// is lost.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	t.Run("no reserve", func(t *testing.T) {
		dir := smallDisk(t, 48<<20)
		b := startBus(t, withConfig(func(c *daemon.Config) { c.DataDir = dir; c.DiskReserve = -1 }))
		ctx := ctxT(t)
		_, alice := b.user(t, "alice")
		room, err := alice.CreateRoom(ctx, "before")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Send(ctx, room.ID, "", []byte("acknowledged before the disk filled")); err != nil {
			t.Fatal(err)
		}
		waitHealth(t, b, http.StatusOK, "")
		fill(t, dir, 0)
		waitHealth(t, b, http.StatusServiceUnavailable, wire.HealthStoreUnwritable)
		if !strings.Contains(metricsText(t, b), `unibus_degraded{reason="store_unwritable"} 1`) {
			t.Error("metrics do not show store_unwritable")
		}
		var ae *client.APIError
		if _, err := alice.ListRooms(ctx); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
			t.Fatalf("a signed request on a full disk: %v, want 503", err)
		}
		unfill(t, dir)
		waitHealth(t, b, http.StatusOK, "")
		if _, err := alice.ListRooms(ctx); err != nil {
			t.Fatalf("a signed request after space was freed: %v", err)
		}
		if got := listenN(t, alice, room.ID, 1); string(got[0].Data) != "acknowledged before the disk filled" {
			t.Fatalf("the room holds %q", got[0].Data)
		}
	})
	t.Run("reserve", func(t *testing.T) {
		const reserve = 12 << 20
		dir := smallDisk(t, 64<<20)
		b := startBus(t, withConfig(func(c *daemon.Config) { c.DataDir = dir; c.DiskReserve = reserve }))
		ctx := ctxT(t)
		_, alice := b.user(t, "alice")
		room, err := alice.CreateRoom(ctx, "room")
		if err != nil {
			t.Fatal(err)
		}
		waitHealth(t, b, http.StatusOK, "")
		fill(t, dir, reserve/2) // below the reserve, not full
		waitHealth(t, b, http.StatusServiceUnavailable, wire.HealthDiskLow)
		if _, err := alice.Send(ctx, room.ID, "", []byte("refused")); !errors.Is(err, client.ErrDiskFull) {
			t.Fatalf("send below the reserve: %v, want ErrDiskFull", err)
		}
		// The control plane's writes go on in the reserve.
		if _, err := alice.CreateRoom(ctx, "in the reserve"); err != nil {
			t.Fatalf("create a room in the reserve: %v", err)
		}
		unfill(t, dir)
		waitHealth(t, b, http.StatusOK, "")
		if _, err := alice.Send(ctx, room.ID, "", []byte("stored")); err != nil {
			t.Fatalf("send after space was freed: %v", err)
		}
		if got := listenN(t, alice, room.ID, 1); string(got[0].Data) != "stored" {
			t.Fatalf("the room holds %q, want only the message sent after space was freed", got[0].Data)
		}
	})
}

// smallDisk mounts a tmpfs of size bytes and returns a data directory in
// it; the file system is unmounted at the end of the test.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fill writes a filler file next to dir until the file system has only
// leave bytes free (0: until it is full).
func fill(t *testing.T, dir string, leave int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(filepath.Dir(dir), "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free <= leave {
			return
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// unfill removes the filler file.
func unfill(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(filepath.Dir(dir), "filler")); err != nil {
		t.Fatal(err)
	}
}

// TestSyncPolicyWarns: a --js-sync other than always is an explicit choice
// with a measured cost: the node says so at start (and /healthz's posture
// shows it); with always it says nothing.
func TestSyncPolicyWarns(t *testing.T) {
	for _, c := range []struct {
		policy daemon.JSSync
		warns  bool
	}{{"2m", true}, {daemon.JSSyncAlways, false}} {
		var logs harness.LockedBuffer
		b := startBus(t, withConfig(func(cfg *daemon.Config) {
			cfg.JSSync = c.policy
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}))
		warned := strings.Contains(logs.String(), "lost if this machine loses power")
		if warned != c.warns {
			t.Errorf("--js-sync %s: warned=%v, want %v:\n%s", c.policy, warned, c.warns, logs.String())
		}
		if _, h := harness.Health(b.d.HTTPURL()); h.Posture.JSSync != string(c.policy) {
			t.Errorf("--js-sync %s: posture says %q", c.policy, h.Posture.JSSync)
		}
	}
}

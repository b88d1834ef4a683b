package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/unibus/unibus/internal/harness"
)

// blobTestSize is the size of the file the blob test round-trips (a
// 200 MiB file with the server's memory bounded).
const blobTestSize = 200 << 20

// TestBlobRoundTrip200MiB: a 200 MiB random file goes from the admin to bob
// through a real membershipd, byte-identical; the server's peak resident
// memory (VmHWM) stays under 64 MiB; and no 4 KiB window of the plaintext
// appears anywhere under the server's state directory.
func TestBlobRoundTrip200MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 200 MiB transfer")
	}
	dir := t.TempDir()
	bus := harness.StartBus(t, dir)
	env := []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + bus.NATSURL}
	admin := append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, "local_files", "admin.id"))
	bob := append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, "bob.id"))
	run := func(env []string, args ...string) string {
		t.Helper()
		return unibusOK(t, dir, env, args...).Stdout
	}
	pub := strings.TrimSpace(run(env, "keygen", "-o", filepath.Join(dir, "bob.id")))
	run(admin, "user", "add", "--handle", "bob", "--sign-pub", pub)
	run(bob, "register")
	run(admin, "room", "create", "files")
	run(admin, "room", "add", "files", "bob")

	src := filepath.Join(dir, "big.bin")
	want := writeRandomFile(t, src, blobTestSize)
	var put struct{ ID string }
	if err := json.Unmarshal([]byte(run(admin, "--json", "blob", "put", "files", src)), &put); err != nil || len(put.ID) != 64 {
		t.Fatalf("blob put: %v %q", err, put.ID)
	}
	dst := filepath.Join(dir, "got.bin")
	run(bob, "blob", "get", "files", put.ID, "-o", dst)
	if got := fileSum(t, dst); got != want {
		t.Fatal("downloaded file differs from the original")
	}
	if hwm := peakRSS(t, bus.PID()); hwm >= 64<<20 {
		t.Errorf("membershipd peak RSS %d MiB, want < 64 MiB", hwm>>20)
	} else {
		t.Logf("membershipd peak RSS during the transfer: %.1f MiB", float64(hwm)/(1<<20))
	}

	// Plaintext search: sample windows of the original and look for them in
	// every state file.
	plain, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var needles [][]byte
	for off := 0; off+4096 <= len(plain); off += len(plain) / 16 {
		needles = append(needles, plain[off:off+64])
	}
	filepath.WalkDir(filepath.Join(dir, "local_files"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("plaintext of the file found in server state %s", p)
				break
			}
		}
		return nil
	})
}

func writeRandomFile(t *testing.T, path string, size int) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// peakRSS reads the process's peak resident set size (VmHWM) from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// TestTwoProcessesExchangeAMessage is the quickstart, run as a user would:
// a real membershipd process, then separate unibus processes for the admin
// and for bob. Afterwards no file under the server's state directory
// contains the plaintext.
func TestTwoProcessesExchangeAMessage(t *testing.T) {
	dir := t.TempDir()
	bus := harness.StartBus(t, dir)
	env := []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + bus.NATSURL}
	admin := append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, "local_files", "admin.id"))
	bob := append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, "bob.id"))
	run := func(env []string, args ...string) harness.Result {
		t.Helper()
		return unibusOK(t, dir, env, args...)
	}

	signPub := strings.TrimSpace(run(env, "keygen", "-o", filepath.Join(dir, "bob.id")).Stdout)
	if len(signPub) != 64 {
		t.Fatalf("keygen printed %q", signPub)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "bob.id")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %o", fi.Mode().Perm())
	}
	run(admin, "user", "add", "--handle", "bob", "--sign-pub", signPub)
	run(bob, "register")
	var room struct{ ID string }
	if err := json.Unmarshal([]byte(run(admin, "--json", "room", "create", "demo").Stdout), &room); err != nil || len(room.ID) != 32 {
		t.Fatalf("room create: %v %q", err, room.ID)
	}
	run(admin, "room", "add", "demo", "bob")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := harness.Command(ctx, t, dir, bob, "unibus", "--json", "listen", "demo", "--from-start", "--count", "1", "--wait", "45s")
	var lout, lerr bytes.Buffer
	listen.Stdout, listen.Stderr = &lout, &lerr
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	canary := "canary-" + randHex(t)
	run(admin, "send", "demo", "hello bob "+canary)
	if err := listen.Wait(); err != nil {
		t.Fatalf("listen: %v\nstdout: %s\nstderr: %s", err, lout.String(), lerr.String())
	}
	var got struct {
		Handle, Data string
		Epoch        uint64
	}
	if err := json.Unmarshal(lout.Bytes(), &got); err != nil {
		t.Fatalf("listen output %q: %v", lout.String(), err)
	}
	if got.Handle != "admin" || got.Data != "hello bob "+canary || got.Epoch != 1 {
		t.Fatalf("bob received %+v", got)
	}

	// Stop the server so every write is on disk, then look for the
	// plaintext in every file of its state: the SQLite database and WAL,
	// the JetStream store, identities.
	bus.Stop(t)
	state := filepath.Join(dir, "local_files")
	files := 0
	filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(canary)) {
			t.Errorf("plaintext found in server state file %s", p)
		}
		return nil
	})
	if files < 3 {
		t.Fatalf("expected the server's state files under %s, found %d", state, files)
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

package client

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/unibus/unibus/identity"
)

func testPub(t *testing.T, b byte) (identity.SignPub, identity.KEMPub) {
	t.Helper()
	id, err := identity.FromSeed(bytes.Repeat([]byte{b}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return id.SignPub(), id.KEMPub()
}

// TestFingerprintVector pins the fingerprint format: a change of label,
// order or encoding changes what users compare and must be deliberate.
func TestFingerprintVector(t *testing.T) {
	sp, kp := testPub(t, 1)
	got := Fingerprint(sp, kp)
	if len(got) != 16*4+15 || strings.Count(got, " ") != 15 {
		t.Fatalf("fingerprint %q: want 16 groups of 4 hex digits", got)
	}
	if got != fingerprintVector {
		t.Fatalf("fingerprint of the seed 0x01…01 is %q, want %q", got, fingerprintVector)
	}
	sp2, kp2 := testPub(t, 2)
	if Fingerprint(sp, kp2) == got || Fingerprint(sp2, kp) == got {
		t.Fatal("the fingerprint does not depend on both keys")
	}
}

// fingerprintVector is Fingerprint of the identity whose seed is 32 bytes
// of 0x01.
const fingerprintVector = "5068 2ea5 795f b6a5 0837 8919 d205 3fa0 4ff0 837d 315f 9dd3 7168 fc12 3826 665a"

func TestKnownKeysFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "me.id.known_keys")
	bob, bobKEM := testPub(t, 2)
	mallory, malKEM := testPub(t, 3)
	k, err := newKnownKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the file exists before anything was pinned: %v", err)
	}
	bobPin := pin{handle: "bob", signPub: bob.String(), kem: kemDigest(bobKEM)}
	if isNew, err := k.check(bobPin); err != nil || !isNew {
		t.Fatalf("first sight: new=%v err=%v", isNew, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("known-keys file mode %04o, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	want := knownKeysHeader + "\nhandle bob " + bob.String() + "\nkem " + bob.String() + " " + kemDigest(bobKEM) + "\n"
	if string(raw) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", raw, want)
	}
	if isNew, err := k.check(bobPin); err != nil || isNew {
		t.Fatalf("second sight: new=%v err=%v", isNew, err)
	}

	// Another process (a new knownKeys on the same file) sees the pins
	// and refuses both kinds of change.
	k2, err := newKnownKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k2.check(pin{handle: "bob", signPub: mallory.String(), kem: kemDigest(malKEM)})
	var ce *KeyChangedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrKeyChanged) || ce.Key != "sign-pub" || ce.Pinned != bob.String() || ce.Got != mallory.String() {
		t.Fatalf("handle swap: %v", err)
	}
	for _, s := range []string{`user "bob"`, "unibus whois bob --accept", path} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	_, err = k2.check(pin{handle: "bob", signPub: bob.String(), kem: kemDigest(malKEM)})
	if !errors.As(err, &ce) || ce.Key != "KEM key" {
		t.Fatalf("KEM swap: %v", err)
	}
	// A refused change is not recorded.
	if raw2, _ := os.ReadFile(path); !bytes.Equal(raw, raw2) {
		t.Fatalf("a refused change was written:\n%s", raw2)
	}

	// Accepting rewrites the file with the new keys only.
	if err := k2.replace(pin{handle: "bob", signPub: mallory.String(), kem: kemDigest(malKEM)}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.check(pin{handle: "bob", signPub: mallory.String(), kem: kemDigest(malKEM)}); err != nil {
		t.Fatalf("after accept: %v", err)
	}
	if _, err := k.check(pin{handle: "bob", signPub: bob.String()}); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("the old key is still accepted after the change was accepted: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("rewritten file mode %04o", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestKnownKeysMemoryOnly(t *testing.T) {
	bob, _ := testPub(t, 2)
	mallory, _ := testPub(t, 3)
	k, err := newKnownKeys("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.check(pin{handle: "bob", signPub: bob.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.check(pin{handle: "bob", signPub: mallory.String()}); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("in-memory pins: %v", err)
	}
}

func TestKnownKeysRefusals(t *testing.T) {
	bob, _ := testPub(t, 2)
	b := bob.String()
	digest := strings.Repeat("ab", 32)
	cases := map[string]string{
		"no header":           "handle bob " + b + "\n",
		"other version":       "# unibus known keys v2\n",
		"unknown record":      knownKeysHeader + "\nuser bob " + b + "\n",
		"two spaces":          knownKeysHeader + "\nhandle  bob " + b + "\n",
		"missing field":       knownKeysHeader + "\nhandle bob\n",
		"extra field":         knownKeysHeader + "\nkem " + b + " " + digest + " x\n",
		"bad handle":          knownKeysHeader + "\nhandle Bob " + b + "\n",
		"bad sign-pub":        knownKeysHeader + "\nhandle bob " + strings.ToUpper(b) + "\n",
		"bad digest":          knownKeysHeader + "\nkem " + b + " " + digest[:62] + "\n",
		"overlong line":       knownKeysHeader + "\n# " + strings.Repeat("x", 5000) + "\n",
		"bad sign-pub of kem": knownKeysHeader + "\nkem " + b[:63] + " " + digest + "\n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kk")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := newKnownKeys(path); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("accepted or unclear: %v", err)
			}
		})
	}
	t.Run("loose mode", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kk")
		if err := os.WriteFile(path, []byte(knownKeysHeader+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, 0o644)
		if _, err := newKnownKeys(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("a file others can read was accepted: %v", err)
		}
	})
	t.Run("comments, blank lines and the first of duplicates", func(t *testing.T) {
		mallory, _ := testPub(t, 3)
		path := filepath.Join(t.TempDir(), "kk")
		content := knownKeysHeader + "\n\n# a comment\nhandle bob " + b + "\r\nhandle bob " + mallory.String() + "\n"
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := newKnownKeys(path)
		if err != nil {
			t.Fatal(err)
		}
		if k.handles["bob"] != b {
			t.Fatalf("bob pinned to %s", k.handles["bob"])
		}
	})
}

// TestKnownKeysConcurrentAppends: pins written at once by several
// goroutines (as by several processes) all land, on whole lines.
func TestKnownKeysConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kk")
	pubs := make([]identity.SignPub, 20)
	for i := range pubs {
		pubs[i], _ = testPub(t, byte(10+i))
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := newKnownKeys(path)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := k.check(pin{handle: "u" + string(rune('a'+i)), signPub: pubs[i].String()}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	k, err := newKnownKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.handles) != 20 {
		t.Fatalf("%d of 20 pins survived", len(k.handles))
	}
}

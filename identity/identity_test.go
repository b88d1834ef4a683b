package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestFromSeedDeterministic(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, SeedSize)
	a, err := FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := FromSeed(seed)
	if a.SignPub() != b.SignPub() || !a.KEMPub().Equal(b.KEMPub()) {
		t.Fatal("same seed, different keys")
	}
	c, _ := FromSeed(bytes.Repeat([]byte{8}, SeedSize))
	if c.KEMPub().Equal(a.KEMPub()) {
		t.Fatal("different seeds, same KEM key")
	}
	if _, err := FromSeed(seed[:31]); err == nil {
		t.Fatal("short seed accepted")
	}
}

// The nkey form must be the very key nkeys (and so nats-server) derives.
func TestNKeyMatchesNATS(t *testing.T) {
	id, _ := Generate()
	seed, err := id.seedString()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	if pub != id.NKey() {
		t.Fatalf("nkey %s != %s", pub, id.NKey())
	}
	nonce := []byte("server-nonce")
	sig, _ := id.SignNonce(nonce)
	if err := kp.Verify(nonce, sig); err != nil {
		t.Fatal("nkeys does not verify our nonce signature")
	}
	back, err := SignPubFromNKey(pub)
	if err != nil || back != id.SignPub() {
		t.Fatalf("round trip nkey: %v", err)
	}
	if sp := id.SignPub(); !ed25519.Verify(sp[:], nonce, sig) {
		t.Fatal("sign-pub is not the ed25519 key")
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "me.id")
	id, _ := Generate()
	if err := id.Save(p); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(p))
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %o", di.Mode().Perm())
	}
	raw, _ := os.ReadFile(p)
	if !bytes.HasPrefix(raw, []byte("SU")) {
		t.Fatalf("file is not an nkey user seed")
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.SignPub() != id.SignPub() {
		t.Fatal("loaded a different identity")
	}
	if err := id.Save(p); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
}

func TestLoadRefusesLooseModes(t *testing.T) {
	dir := t.TempDir()
	id, _ := Generate()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o666} {
		p := filepath.Join(dir, fmt.Sprintf("id-%o", mode))
		if err := id.Save(p); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		_, err := Load(p)
		if !errors.Is(err, ErrInsecureFile) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"empty":        {},
		"not a seed":   []byte("hello"),
		"account seed": mustAccountSeed(t),
		"huge":         bytes.Repeat([]byte("A"), MaxFileSize+10),
	}
	for name, content := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, content, 0o600)
		if _, err := Load(p); err == nil {
			t.Errorf("%s: loaded", name)
		} else if strings.Contains(err.Error(), string(content)) && len(content) > 0 {
			t.Errorf("%s: error echoes the file content", name)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
}

func mustAccountSeed(t *testing.T) []byte {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := kp.Seed()
	return s
}

func TestNeverPrintsSecrets(t *testing.T) {
	id, _ := Generate()
	seed, _ := id.seedString()
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "id", id)
	outs := []string{fmt.Sprint(id), fmt.Sprintf("%v %+v %#v %s", id, id, id, id), buf.String()}
	for _, o := range outs {
		if strings.Contains(o, string(seed)) || strings.Contains(o, fmt.Sprintf("%x", id.seed[:])) {
			t.Fatalf("secret printed: %s", o)
		}
		if !strings.Contains(o, id.SignPub().String()) {
			t.Fatalf("public id missing from %q", o)
		}
	}
}

func TestParseSignPub(t *testing.T) {
	id, _ := Generate()
	s := id.SignPub().String()
	if p, err := ParseSignPub(s); err != nil || p != id.SignPub() {
		t.Fatal(err)
	}
	for _, bad := range []string{"", s[:63], s + "0", strings.ToUpper(s), "z" + s[1:], " " + s[1:]} {
		if _, err := ParseSignPub(bad); !errors.Is(err, ErrBadSignPub) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKEMBinding(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	if err := VerifyKEMBinding(a.SignPub(), a.KEMPub(), a.SignKEMBinding()); err != nil {
		t.Fatal(err)
	}
	// b's key under a's name, with b's binding: refused.
	if err := VerifyKEMBinding(a.SignPub(), b.KEMPub(), b.SignKEMBinding()); !errors.Is(err, ErrBadKEMBinding) {
		t.Fatal("swapped KEM key accepted")
	}
	if _, err := ParseKEMPub(make([]byte, KEMPubSize-1)); !errors.Is(err, ErrBadKEMPub) {
		t.Fatal("short KEM key accepted")
	}
}

// Sign uses curve25519-voi for speed; its signatures must be crypto/ed25519's
// byte for byte (RFC 8032 signatures are deterministic), and verify there.
func TestSignIsCryptoEd25519(t *testing.T) {
	for i := range 200 {
		var seed [SeedSize]byte
		seed[0], seed[1] = byte(i), byte(i>>8)
		id, err := FromSeed(seed[:])
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte{byte(i)}, i*7)
		got := id.Sign(msg)
		want := ed25519.Sign(ed25519.NewKeyFromSeed(seed[:]), msg)
		if !bytes.Equal(got, want) {
			t.Fatalf("seed %d, %d-byte message: signature %x, crypto/ed25519 makes %x", i, len(msg), got, want)
		}
		if !ed25519.Verify(id.SigningKey().Public().(ed25519.PublicKey), msg, got) {
			t.Fatalf("seed %d: crypto/ed25519 does not verify the signature", i)
		}
	}
}

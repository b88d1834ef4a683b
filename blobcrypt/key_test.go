package blobcrypt

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyNeverPrints(t *testing.T) {
	k := testKey() // bytes 0x40…0x5f, "@ABC…"
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", k)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", k)
	outs := []string{k.String(), k.GoString(), logs.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%c", "%U", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, &k), fmt.Sprintf(verb, struct{ K Key }{k}))
	}
	for _, out := range outs {
		for _, leak := range []string{"404142", "@ABC", "64 65 66", "0x40"} {
			if strings.Contains(out, leak) {
				t.Errorf("key printed: %q", out)
			}
		}
	}
	if k.String() != "blobkey(redacted)" {
		t.Errorf("String() = %q", k.String())
	}
}

func TestNewKey(t *testing.T) {
	a, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKey()
	if a.Equal(b) || a == (Key{}) {
		t.Fatal("NewKey is not random")
	}
	if !a.Equal(a) {
		t.Fatal("Equal is false for the same key")
	}
}

// TestKeyReuse checks that the same key and plaintext give unrelated
// ciphertexts (the salt makes the payload key fresh), and that a payload
// key depends on both the key and the salt.
func TestKeyReuse(t *testing.T) {
	k := testKey()
	a, b := seal(t, k, pattern(100)), seal(t, k, pattern(100))
	if bytes.Equal(a[headerSize:], b[headerSize:]) {
		t.Fatal("same key, same plaintext, same ciphertext")
	}
	s1, s2 := make([]byte, saltSize), make([]byte, saltSize)
	s2[0] = 1
	k2 := k
	k2[0] ^= 1
	p1, _ := payloadKey(&k, s1)
	p2, _ := payloadKey(&k, s2)
	p3, _ := payloadKey(&k2, s1)
	if bytes.Equal(p1, p2) || bytes.Equal(p1, p3) || len(p1) != 32 {
		t.Fatal("payload key does not depend on key and salt")
	}
}

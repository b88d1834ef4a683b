package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// operator-creds writes a 0600 nats context with the node's URL, CA and
// an operator token, and selects it; the token is not printed.
func TestOperatorCredsWritesContext(t *testing.T) {
	dir := t.TempDir()
	newID(t, dir, "internal")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte("not read"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	var out bytes.Buffer
	root := newRoot(&out, &out)
	root.SetArgs([]string{"operator-creds", "--node-env", "none", "--internal-id-file", filepath.Join(dir, "internal.id"),
		"--nats-url", "nats://127.0.0.1:4250", "--ca", caFile, "--valid", "24h"})
	if err := root.Execute(); err != nil {
		t.Fatalf("operator-creds: %v\n%s", err, out.String())
	}
	path := filepath.Join(dir, "config", "nats", "context", "unibus.json")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("context file: %v %v", fi, err)
	}
	var c natsContext
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &c); err != nil || c.URL != "nats://127.0.0.1:4250" || c.CA != caFile || !strings.HasPrefix(c.Token, "unibus-operator-v1.") {
		t.Errorf("context %s: %v", b, err)
	}
	if sel, _ := os.ReadFile(filepath.Join(dir, "config", "nats", "context.txt")); string(sel) != "unibus" {
		t.Errorf("selected context %q", sel)
	}
	if strings.Contains(out.String(), c.Token) || !strings.Contains(out.String(), `wrote nats context "unibus"`) {
		t.Errorf("output: %s", out.String())
	}
	root = newRoot(&out, &out)
	root.SetArgs([]string{"operator-creds", "--node-env", "none", "--internal-id-file", filepath.Join(dir, "internal.id"), "--context", "../x"})
	if err := root.Execute(); err == nil {
		t.Error("a context name with a path in it")
	}
}

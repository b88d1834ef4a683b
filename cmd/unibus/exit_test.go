package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/internal/harness"
)

// TestExitStatuses: usage and local errors are 2, an unreachable server 3,
// with messages that say what to do.
func TestExitStatuses(t *testing.T) {
	dir := t.TempDir()
	r := harness.Run(t, dir, nil, "", "unibus", "whoami")
	if r.Code != 2 || !strings.Contains(r.Stderr, "unibus keygen -o FILE") {
		t.Errorf("no identity: %+v", r)
	}
	if r = harness.Run(t, dir, nil, "", "unibus", "keygen", "-o", filepath.Join(dir, "me.id")); r.Code != 0 {
		t.Fatalf("keygen: %+v", r)
	}
	if r = harness.Run(t, dir, nil, "", "unibus", "keygen", "-o", filepath.Join(dir, "me.id")); r.Code != 1 || !strings.Contains(r.Stderr, "refusing to overwrite") {
		t.Errorf("keygen over an existing file: %+v", r)
	}
	os.Chmod(filepath.Join(dir, "me.id"), 0o644)
	env := []string{"UNIBUS_IDENTITY=" + filepath.Join(dir, "me.id"), "UNIBUS_SERVER=http://127.0.0.1:1"}
	if r = harness.Run(t, dir, env, "", "unibus", "whoami"); r.Code != 2 || !strings.Contains(r.Stderr, "chmod 600") {
		t.Errorf("identity readable by others: %+v", r)
	}
	os.Chmod(filepath.Join(dir, "me.id"), 0o600)
	if r = harness.Run(t, dir, env, "", "unibus", "whoami"); r.Code != 3 || !strings.Contains(r.Stderr, "unreachable") {
		t.Errorf("unreachable server: %+v", r)
	}
}

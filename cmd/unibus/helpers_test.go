package main

import (
	"testing"

	"github.com/unibus/unibus/internal/harness"
)

// unibusOK runs the built unibus in dir with env and fails the test unless
// it exits 0.
func unibusOK(t *testing.T, dir string, env []string, args ...string) harness.Result {
	t.Helper()
	r := harness.Run(t, dir, env, "", "unibus", args...)
	if r.Code != 0 {
		t.Fatalf("unibus %v: exit %d\nstdout: %s\nstderr: %s", args, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

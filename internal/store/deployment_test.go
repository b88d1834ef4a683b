package store

import "testing"

func TestDeploymentIDForm(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewDeploymentID()
		if !ValidDeploymentID(id) {
			t.Fatalf("NewDeploymentID() = %q, not a valid id", id)
		}
		if seen[id] {
			t.Fatalf("NewDeploymentID() repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
		"0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcdeg", "0123456789abcdef 123456789abcdef"} {
		if ValidDeploymentID(bad) {
			t.Errorf("ValidDeploymentID(%q) = true", bad)
		}
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/identity"
)

// nkeySeed returns the identity file's content, through the public API only.
func nkeySeed(t *testing.T, id *identity.Identity) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "id")
	if err := id.Save(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}

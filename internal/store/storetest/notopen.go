package storetest

import (
	"errors"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

// A store that is not open yet answers the per-epoch lookups and the
// deployment id with ErrUnavailable, as it does every other read.
func testNotOpenYetLookups(t *testing.T, s store.Store) {
	ctx := t.Context()
	alice, room := signPub("alice"), roomID("r")
	calls := map[string]func() error{
		"Epoch":        func() error { _, err := s.Epoch(ctx, room, 1); return err },
		"SealedKey":    func() error { _, err := s.SealedKey(ctx, room, alice, 1); return err },
		"DeploymentID": func() error { _, err := s.DeploymentID(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s on a store not open yet: %v, want ErrUnavailable", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

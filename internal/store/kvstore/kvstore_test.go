package kvstore_test

import (
	"testing"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/storetest"
	"github.com/unibus/unibus/internal/testnode"
)

// openStore opens the KV store on a fresh embedded node.
func openStore(t *testing.T) (*kvstore.Store, *testnode.Node) {
	t.Helper()
	n := testnode.Start(t, "")
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{})
	if err != nil {
		t.Fatalf("open kv store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, n
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openStore(t)
		return s
	})
}

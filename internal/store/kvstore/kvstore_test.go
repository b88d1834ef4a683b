package kvstore_test

import (
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/jsretry/jsretrytest"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/storetest"
	"github.com/unibus/unibus/internal/testnode"
)

// openStore opens the KV store on a fresh embedded node.
func openStore(t *testing.T) (*kvstore.Store, *testnode.Node) {
	t.Helper()
	n := testnode.Start(t, "")
	return openOn(t, n), n
}

// openOn opens the KV store on node n, closed at the end of the test.
func openOn(t *testing.T, n *testnode.Node) *kvstore.Store {
	t.Helper()
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{})
	if err != nil {
		t.Fatalf("open kv store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	nodes := map[store.Store]*testnode.Node{}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.Store {
			s, n := openStore(t)
			mu.Lock()
			nodes[s] = n
			mu.Unlock()
			return s
		},
		// Another node's handle: its own connection to the same buckets.
		Reopen: func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			n := nodes[s]
			mu.Unlock()
			return openOn(t, n)
		},
		// A server without JetStream never lets the store open.
		NotOpen: func(t *testing.T) store.Store {
			return kvstore.New(jsretrytest.NoJetStream(t), kvstore.Options{Bootstrap: 10 * time.Minute})
		},
	})
}

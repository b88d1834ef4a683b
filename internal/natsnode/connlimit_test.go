package natsnode

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// One user floods the node with connections: past MaxConnsPerUser its
// logins are refused, while another user, and membershipd's own
// identity, still log in; a closed connection frees its place.
func TestConnsPerUser(t *testing.T) {
	const limit = 3
	var tooMany atomic.Int32
	tn := startNode(t, func(o *Options) {
		o.MaxConnsPerUser = limit
		o.OnAuth = func(reason string, _ bool) {
			if reason == ReasonTooManyConns {
				tooMany.Add(1)
			}
		}
	})
	alice, bob := newUser(t), newUser(t)
	tn.authz.set(alice, true)
	tn.authz.set(bob, true)
	var held []*member
	for range limit {
		held = append(held, mustConnect(t, tn.ClientURL(), alice))
	}
	for i := range 5 {
		if m, err := connectUser(t, tn.ClientURL(), alice); err == nil {
			m.nc.Close()
			t.Fatalf("alice's connection %d past the limit of %d was let in", limit+i+1, limit)
		}
	}
	if n := tooMany.Load(); n != 5 {
		t.Errorf("%d logins denied as %s, want 5", n, ReasonTooManyConns)
	}
	mustConnect(t, tn.ClientURL(), bob)
	for range limit + 1 {
		nc, err := tn.Connect(tn.internal.pub, tn.internal.sign)
		if err != nil {
			t.Fatalf("the internal identity was refused while alice is at her limit: %v", err)
		}
		t.Cleanup(nc.Close)
	}
	held[0].nc.Close()
	harness.EventuallyNoError(t, 5*time.Second, func() error {
		m, err := connectUser(t, tn.ClientURL(), alice)
		if err != nil {
			return fmt.Errorf("alice after closing one connection: %w", err)
		}
		held = append(held, m)
		return nil
	}, "a closed connection frees its place")
	if m, err := connectUser(t, tn.ClientURL(), alice); err == nil {
		m.nc.Close()
		t.Fatal("alice went past the limit again")
	}
}

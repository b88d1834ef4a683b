package natsnode

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/subjects"
)

// A member cannot flood the server with subscriptions: past
// MaxSubsPerConn on one connection the server refuses them (and closes
// the connection), while other members are unaffected.
func TestSubscriptionFloodCut(t *testing.T) {
	tn := startNode(t, nil)
	mallory, alice := newUser(t), newUser(t)
	tn.authz.set(mallory, true)
	tn.authz.set(alice, true)
	m := mustConnect(t, tn.ClientURL(), mallory)
	a := mustConnect(t, tn.ClientURL(), alice)
	for i := range MaxSubsPerConn + 10 {
		if _, err := m.nc.SubscribeSync(subjects.InboxPrefix(mallory.hex) + fmt.Sprintf(".flood.%d", i)); err != nil {
			break // refused locally once the connection was closed
		}
	}
	m.nc.Flush()
	var got error
	select {
	case got = <-m.errs:
	case <-time.After(5 * time.Second):
	}
	if got == nil || !strings.Contains(strings.ToLower(got.Error()), "maximum subscriptions") {
		t.Fatalf("after %d subscriptions: %v, want the server's maximum-subscriptions error", MaxSubsPerConn+10, got)
	}
	if err := a.nc.Flush(); err != nil || !a.nc.IsConnected() {
		t.Fatalf("another member's connection: %v", err)
	}
}

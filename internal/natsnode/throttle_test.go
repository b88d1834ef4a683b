package natsnode

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// A key whose signed logins were refused failedLoginLimit times is refused
// at once for the rest of the window, without a store lookup; a stranger's
// logins with bad signatures for another user's key do not count against
// that user, who still logs in.
func TestFailedLoginsThrottled(t *testing.T) {
	tn := startNode(t, nil)
	revoked, alice := newUser(t), newUser(t)
	tn.authz.set(revoked, false)
	tn.authz.set(alice, true)
	for i := range failedLoginLimit + 3 {
		if _, err := connectUser(t, tn.ClientURL(), revoked, nats.NoReconnect()); err == nil {
			t.Fatalf("login %d of a revoked user succeeded", i)
		}
	}
	if n := tn.authz.callCount(revoked); n != failedLoginLimit {
		t.Errorf("the authorizer was asked %d times for the revoked key, want %d (then throttled)", n, failedLoginLimit)
	}

	// A stranger signs with its own key while claiming alice's: refused
	// as a bad signature, never counted against alice.
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	for range failedLoginLimit + 3 {
		if _, err := nats.Connect(tn.ClientURL(), nats.Nkey(alice.pub, stranger.Sign), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
			t.Fatal("a login with another key's signature succeeded")
		}
	}
	if _, err := connectUser(t, tn.ClientURL(), alice, nats.NoReconnect()); err != nil {
		t.Fatalf("alice's login after a stranger's bad signatures: %v", err)
	}
}

// The window: a throttled key may try again once failedLoginWindow has
// passed since its first counted refusal.
func TestLoginThrottleWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	th := newLoginThrottle(func() time.Time { return now })
	for range failedLoginLimit - 1 {
		th.refused("U1")
	}
	if th.throttled("U1") {
		t.Fatal("throttled before the limit")
	}
	th.refused("U1")
	if !th.throttled("U1") || th.throttled("U2") {
		t.Fatal("the limit does not throttle that key, and only it")
	}
	now = now.Add(failedLoginWindow - time.Millisecond)
	if !th.throttled("U1") {
		t.Fatal("released before the window passed")
	}
	now = now.Add(time.Millisecond)
	if th.throttled("U1") {
		t.Fatal("still throttled after the window")
	}
	// The table stays bounded.
	for i := range failedLoginKeys + 10 {
		th.refused(string(rune(i)) + "k")
	}
	if len(th.keys) > failedLoginKeys {
		t.Fatalf("%d keys remembered, more than %d", len(th.keys), failedLoginKeys)
	}
}

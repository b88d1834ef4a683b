package kvstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

// WatchReadyTimeout bounds how long WatchAccess waits for the buckets'
// current state (a bucket without a leader delivers none).
var WatchReadyTimeout = 30 * time.Second

// WatchAccess calls changed(signPub) for every user whose data-plane access
// may have changed — a user record whose status changed, a room whose state
// record gained or lost the user — whichever node wrote it. It returns once
// both watches have delivered the current state (which does not call
// changed), and keeps watching until ctx ends. Every node runs it and
// closes the user's live connections on itself (nats-server's connection list is
// per server), so a revocation or removal taken by any node reaches every node.
//
// The members watch keeps each room's member set in memory to tell who
// changed; a state record that is deleted changes all its members.
func (s *Store) WatchAccess(ctx context.Context, changed func(signPub string)) error {
	ctx, cancel := context.WithCancel(ctx)
	uw, err := s.users.WatchFiltered(ctx, []string{"u.*"})
	if err != nil {
		cancel()
		return fmt.Errorf("watch %s: %w", BucketUsers, unavailable(err))
	}
	mw, err := s.members.WatchAll(ctx)
	if err != nil {
		uw.Stop()
		cancel()
		return fmt.Errorf("watch %s: %w", BucketMembers, unavailable(err))
	}
	uready, mready := make(chan struct{}), make(chan struct{})
	go func() {
		defer cancel() // one watch ending ends both
		defer uw.Stop()
		status := map[string]string{}
		live := false
		for e := range uw.Updates() {
			if e == nil {
				live = true
				close(uready)
				continue
			}
			pub := UserKeyPub(e.Key())
			var r userRec
			if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &r) == nil {
				old, seen := status[pub]
				status[pub] = r.Status
				if live && seen && old != r.Status {
					changed(pub)
				}
				continue
			}
			delete(status, pub)
			if live {
				changed(pub)
			}
		}
	}()
	go func() {
		defer cancel()
		defer mw.Stop()
		rooms := map[string]map[string]bool{}
		live := false
		for e := range mw.Updates() {
			if e == nil {
				live = true
				close(mready)
				continue
			}
			now := map[string]bool{}
			var st stateRec
			if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &st) == nil && st.Epoch > 0 {
				for pub := range st.Members {
					now[pub] = true
				}
			}
			old := rooms[e.Key()]
			rooms[e.Key()] = now
			if !live {
				continue
			}
			for pub := range old {
				if !now[pub] {
					changed(pub)
				}
			}
			for pub := range now {
				if !old[pub] {
					changed(pub)
				}
			}
		}
	}()
	timeout := time.After(WatchReadyTimeout)
	for _, ready := range []chan struct{}{uready, mready} {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			cancel() // stops both watches
			uw.Stop()
			mw.Stop()
			return fmt.Errorf("watch %s and %s: the current state did not arrive within %v: %w", BucketUsers, BucketMembers, WatchReadyTimeout, store.ErrUnavailable)
		}
	}
	return nil
}

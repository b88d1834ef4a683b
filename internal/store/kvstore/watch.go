package kvstore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

// WatchReadyTimeout bounds how long establishing the watch waits for the
// buckets' current state (a bucket without a leader delivers none).
var WatchReadyTimeout = 30 * time.Second

// hub is the store's one watch of the users and members buckets and the
// Watch callbacks it reports to. Every node runs it and acts on what it
// reports for the connections it holds itself (nats-server's connection
// list is per server), so a change made on any node reaches every node.
//
// The watch starts with the first Watch: at once if the buckets are open,
// else by the background open, before the store opens. It keeps each
// user's status and KEM key and each room's members, epoch and pending
// flag in memory, to tell what a new record changed; the state that
// exists when it starts is not reported.
type hub struct {
	mu       sync.Mutex // guards watchers, bucketsOpen, running, generation
	watchers []*watcher
	// bucketsOpen is set by the background open once the buckets are
	// bound: from then on Watch starts the watch itself.
	bucketsOpen bool
	running     bool
	generation  uint64 // incremented each time the watch is established

	startMu  sync.Mutex // serializes starting the watch
	reportMu sync.Mutex // held while callbacks run: one report at a time
}

type watcher struct {
	ctx context.Context
	fn  func(store.Change)
}

// Watch implements store.Store (see there for what the kv store reports).
// On a store whose buckets are open it returns once the watch has
// received the buckets' current state; before that it only registers fn,
// and the background open establishes the watch before the store opens.
func (s *Store) Watch(ctx context.Context, fn func(store.Change)) error {
	w := &watcher{ctx: ctx, fn: fn}
	s.hub.mu.Lock()
	s.hub.watchers = append(s.hub.watchers, w)
	start := s.hub.bucketsOpen
	s.hub.mu.Unlock()
	if !start {
		return nil
	}
	if err := s.startWatch(ctx); err != nil {
		s.hub.mu.Lock()
		s.hub.watchers = slices.DeleteFunc(s.hub.watchers, func(x *watcher) bool { return x == w })
		s.hub.mu.Unlock()
		return err
	}
	return nil
}

// ChangeVersion implements store.Store: the watch reports every write from
// every node, so the version is constant while it runs (it counts the
// times the watch was established). Without a running watch it fails, and
// a caller reads the store.
func (s *Store) ChangeVersion(context.Context) (uint64, error) {
	if err := s.opening.Check(); err != nil {
		return 0, fmt.Errorf("change version: %w", err)
	}
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	if !s.hub.running {
		return 0, fmt.Errorf("change version: no watch of the users and members buckets runs: %w", store.ErrUnavailable)
	}
	return s.hub.generation, nil
}

// bucketsBound records that the buckets are open and reports whether any
// watcher is registered (the background open then starts the watch).
func (s *Store) bucketsBound() (watched bool) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.bucketsOpen = true
	return len(s.hub.watchers) > 0
}

// report calls every live watcher's fn with c, one report at a time.
func (s *Store) report(c store.Change) {
	s.hub.reportMu.Lock()
	defer s.hub.reportMu.Unlock()
	s.hub.mu.Lock()
	live := s.hub.watchers[:0]
	for _, w := range s.hub.watchers {
		if w.ctx.Err() == nil {
			live = append(live, w)
		}
	}
	clear(s.hub.watchers[len(live):])
	s.hub.watchers = live
	ws := slices.Clone(live)
	s.hub.mu.Unlock()
	for _, w := range ws {
		w.fn(c)
	}
}

// startWatch establishes the watch of the users and members buckets,
// unless it runs already, and returns once both have delivered their
// current state, or with an error when waitCtx ends first. Its goroutines
// end when the store is closed.
func (s *Store) startWatch(waitCtx context.Context) error {
	s.hub.startMu.Lock()
	defer s.hub.startMu.Unlock()
	s.hub.mu.Lock()
	running := s.hub.running
	s.hub.mu.Unlock()
	if running {
		return nil
	}
	if s.life.Err() != nil {
		return fmt.Errorf("watch: the store is closed: %w", store.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(s.life)
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
	var ended sync.Once
	end := func() { // one watch ending ends both
		ended.Do(func() {
			cancel()
			s.hub.mu.Lock()
			wasRunning := s.hub.running
			s.hub.running = false
			s.hub.mu.Unlock()
			if wasRunning && s.life.Err() == nil {
				s.o.Logger.Warn("the watch of the users and members buckets ended: access changes made elsewhere are no longer seen on this node")
				s.report(store.Change{Kind: store.ChangeAll})
			}
		})
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer end()
		defer uw.Stop()
		s.watchUsers(uw, uready)
	}()
	go func() {
		defer s.wg.Done()
		defer end()
		defer mw.Stop()
		s.watchMembers(mw, mready)
	}()
	timeout := time.NewTimer(WatchReadyTimeout)
	defer timeout.Stop()
	for _, ready := range []chan struct{}{uready, mready} {
		select {
		case <-ready:
		case <-ctx.Done():
			end()
			return fmt.Errorf("watch %s and %s: %w: %w", BucketUsers, BucketMembers, store.ErrUnavailable, context.Cause(ctx))
		case <-waitCtx.Done():
			end()
			return fmt.Errorf("watch %s and %s: %w: %w", BucketUsers, BucketMembers, store.ErrUnavailable, waitCtx.Err())
		case <-timeout.C:
			end()
			return fmt.Errorf("watch %s and %s: the current state did not arrive within %v: %w", BucketUsers, BucketMembers, WatchReadyTimeout, store.ErrUnavailable)
		}
	}
	s.hub.mu.Lock()
	s.hub.running = true
	s.hub.generation++
	s.hub.mu.Unlock()
	return nil
}

// userSeen is what the users watch remembers of a user record.
type userSeen struct {
	status, role string
	kem          []byte
}

// watchUsers reports added users and changed statuses, roles and KEM keys
// until the watch ends. It closes ready once the current state is in.
func (s *Store) watchUsers(w jetstream.KeyWatcher, ready chan struct{}) {
	seen := map[string]userSeen{}
	live := false
	for e := range w.Updates() {
		if e == nil {
			if !live {
				live = true
				close(ready)
			}
			continue
		}
		pub := UserKeyPub(e.Key())
		var r userRec
		if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &r) == nil {
			old, had := seen[pub]
			now := userSeen{status: r.Status, role: r.Role, kem: r.KEMPub}
			seen[pub] = now
			if !live {
				continue
			}
			c := store.Change{Kind: store.ChangeUser, User: pub, UserAdded: !had,
				StatusChanged: had && (old.status != now.status || old.role != now.role),
				KEMKeyChanged: had && !slices.Equal(old.kem, now.kem)}
			if c.UserAdded || c.StatusChanged || c.KEMKeyChanged {
				s.report(c)
			}
			continue
		}
		delete(seen, pub)
		if live {
			s.report(store.Change{Kind: store.ChangeUser, User: pub, StatusChanged: true})
		}
	}
}

// roomSeen is what the members watch remembers of a room's state record.
type roomSeen struct {
	epoch   uint64
	pending bool
	members map[string]bool
}

// watchMembers reports rooms whose members, epoch or pending flag changed
// until the watch ends; a lease taken or released changes none of them
// and is not reported. A state record at epoch 0 (a room being created)
// or deleted has no members. It closes ready once the current state is in.
func (s *Store) watchMembers(w jetstream.KeyWatcher, ready chan struct{}) {
	rooms := map[string]roomSeen{}
	live := false
	for e := range w.Updates() {
		if e == nil {
			if !live {
				live = true
				close(ready)
			}
			continue
		}
		now := roomSeen{members: map[string]bool{}}
		var st stateRec
		if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &st) == nil && st.Epoch > 0 {
			now.epoch, now.pending = st.Epoch, st.Pending
			for pub := range st.Members {
				now.members[pub] = true
			}
		}
		old := rooms[e.Key()]
		if now.epoch == 0 {
			delete(rooms, e.Key())
		} else {
			rooms[e.Key()] = now
		}
		if !live {
			continue
		}
		c := store.Change{Kind: store.ChangeRoom, Room: e.Key()}
		for _, pub := range slices.Sorted(maps.Keys(old.members)) {
			if !now.members[pub] {
				c.Left = append(c.Left, pub)
			}
		}
		for _, pub := range slices.Sorted(maps.Keys(now.members)) {
			if !old.members[pub] {
				c.Joined = append(c.Joined, pub)
			}
		}
		if len(c.Joined) > 0 || len(c.Left) > 0 || old.epoch != now.epoch || old.pending != now.pending {
			s.report(c)
		}
	}
}

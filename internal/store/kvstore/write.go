package kvstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

// A write that stores records besides the state record (sealed keys,
// epoch records) cannot make them and the state change one atomic step,
// so it goes through these steps, each a single-key operation:
//
//  1. lease: a compare-and-set of the unchanged state record plus a lease
//     naming the write's random id. Other writers wait for a live lease
//     and take over an expired one.
//  2. records: each record, tagged with the write id, not settled.
//  3. commit: a compare-and-set, against the revision of step 1, to the
//     new state, listing the write in Unsettled (the lease stays).
//  4. settle: each record of step 2 rewritten with Settled set, by a
//     compare-and-set against the revision step 2 got.
//  5. release: a compare-and-set to the state without the write in
//     Unsettled and without the lease.
//
// A record is visible when it is settled or its write is listed in the
// state record (stateRec.visible), so it becomes visible at step 3 and
// stays visible through steps 4 and 5. A failure before step 3 gives the
// lease back, a crash leaves it to expire; either way the records are
// never shown. A crash after step 3 leaves the write in Unsettled (and the
// lease, until it expires); a failure to settle releases the lease with
// the write still listed. The next writer to take the lease settles the
// listed writes' records before storing its own (writeRec says where they
// are) and drops them at its commit, or fails. So Unsettled holds at most
// one write, and the state record does not grow with the number of
// writes: only with the members.

// writeSet is what a write stores besides the state record.
type writeSet struct {
	keys   []store.SealedKey
	epochs []epochRec
}

func (ws writeSet) empty() bool { return len(ws.keys) == 0 && len(ws.epochs) == 0 }

// writeRec names a committed write in a state record's Unsettled list, and
// where its records are, for a writer to settle them if the write's own
// writer did not: its sealed keys are among Members' keys for epochs
// KeysFrom to KeysTo, its epoch records among EpochsFrom to EpochsTo
// (none when EpochsFrom is 0).
type writeRec struct {
	ID         string   `json:"id"`
	Members    []string `json:"members,omitempty"`
	KeysFrom   uint64   `json:"keys_from,omitempty"`
	KeysTo     uint64   `json:"keys_to,omitempty"`
	EpochsFrom uint64   `json:"epochs_from,omitempty"`
	EpochsTo   uint64   `json:"epochs_to,omitempty"`
}

// describe returns the Unsettled entry of the write id storing ws.
func (ws writeSet) describe(id string) writeRec {
	w := writeRec{ID: id}
	seen := map[string]bool{}
	for i, k := range ws.keys {
		if !seen[k.Member] {
			seen[k.Member] = true
			w.Members = append(w.Members, k.Member)
		}
		if i == 0 || k.Epoch < w.KeysFrom {
			w.KeysFrom = k.Epoch
		}
		w.KeysTo = max(w.KeysTo, k.Epoch)
	}
	for i, e := range ws.epochs {
		if i == 0 || e.Epoch < w.EpochsFrom {
			w.EpochsFrom = e.Epoch
		}
		w.EpochsTo = max(w.EpochsTo, e.Epoch)
	}
	return w
}

func (s *Store) newLease(write string) *leaseRec {
	return &leaseRec{Write: write, Until: s.o.Now().Add(s.o.LeaseTTL).UTC()}
}

// waitLease waits for a live lease to go (for a while: the caller reads
// the state record again), doubling *wait up to 200 ms, or fails as
// unavailable when ctx ends.
func waitLease(ctx context.Context, wait *time.Duration) error {
	t := time.NewTimer(*wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("room is busy (a write holds its lease): %w: %w", store.ErrUnavailable, ctx.Err())
	case <-t.C:
	}
	*wait = min(*wait*2, 200*time.Millisecond)
	return nil
}

// mutate applies fn to the room's state record. When fn stores no records
// it is one compare-and-set; otherwise it takes the room's lease and
// continues with leasedWrite. A writer that finds a live lease waits for
// it; an expired one is taken over. fn runs again on every retry, against
// the state it is about to replace.
func (s *Store) mutate(ctx context.Context, room string, fn func(*stateRec) (writeSet, error)) error {
	wait := 5 * time.Millisecond
	for {
		st, raw, rev, err := s.roomState(ctx, room)
		if err != nil {
			return err
		}
		if st.Epoch == 0 {
			return store.ErrNotFound
		}
		if st.Lease != nil && s.o.Now().Before(st.Lease.Until) {
			if err := waitLease(ctx, &wait); err != nil {
				return err
			}
			continue
		}
		ws, err := fn(&st)
		if err != nil {
			return err
		}
		st.Lease = nil
		if ws.empty() {
			_, err := s.members.Update(ctx, room, jsonBytes(st), rev)
			if isConflict(err) {
				continue
			}
			return err
		}
		var held stateRec
		if err := json.Unmarshal(raw, &held); err != nil {
			return err
		}
		held.Lease = s.newLease(newWriteID())
		leaseRev, err := s.members.Update(ctx, room, jsonBytes(held), rev)
		if isConflict(err) {
			continue
		}
		if err != nil {
			return err
		}
		return s.leasedWrite(ctx, room, held, leaseRev, st, ws)
	}
}

// leasedWrite is steps 2 to 5 of a write (see the top of this file) for a
// writer that holds the lease: held is the state record it wrote at
// revision leaseRev (with the lease), next the state to commit. Before its
// own records it settles the writes held lists as unsettled, which a
// writer that stopped after its commit left there. A failure before the
// commit gives the lease back (best effort); a failure to settle after it
// is only logged: the write is committed, stays listed, and the next
// writer settles it.
func (s *Store) leasedWrite(ctx context.Context, room string, held stateRec, leaseRev uint64, next stateRec, ws writeSet) error {
	w := held.Lease.Write
	for _, u := range held.Unsettled {
		if err := s.settleWrite(ctx, room, u); err != nil {
			s.release(ctx, room, held, leaseRev)
			return fmt.Errorf("settle the records of earlier write %s: %w", u.ID, err)
		}
	}
	puts, err := s.putRecords(ctx, room, w, held.Lease.Until, ws)
	if err != nil {
		s.release(ctx, room, held, leaseRev)
		return err
	}
	next.Unsettled = []writeRec{ws.describe(w)}
	next.Lease = held.Lease
	commitRev, err := s.members.Update(ctx, room, jsonBytes(next), leaseRev)
	if err != nil {
		if isConflict(err) {
			return fmt.Errorf("lost the room's lease (a write took longer than %v): %w", s.o.LeaseTTL, store.ErrUnavailable)
		}
		return err // maybe committed after all: the lease expires either way
	}
	err = each(ctx, len(puts), func(ctx context.Context, i int) error {
		p := puts[i]
		err := settleRecord(ctx, p.kv, p.name, w, p.value, p.rev)
		if isConflict(err) { // rewritten since: settle what is there now, if it is still ours
			err = settleName(ctx, p.kv, p.name, w)
		}
		if err != nil {
			return fmt.Errorf("settle %s: %w", p.name, err)
		}
		return nil
	})
	if err == nil {
		next.Unsettled = nil
	} else {
		s.o.Logger.Warn("a committed write's records are not all settled; the room's next write settles them",
			"room", room, "write", w, "err", err)
	}
	// Release even when the caller's context has ended: else the room
	// would wait for the lease to expire.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	next.Lease = nil
	if _, err := s.members.Update(rctx, room, jsonBytes(next), commitRev); err != nil {
		s.o.Logger.Warn("a committed write did not release its room's lease; it expires, and the next write settles the write",
			"room", room, "write", w, "err", err)
	}
	return nil
}

// release gives the lease back after a write failed before its commit:
// the state record returns to held without the lease, unless it changed
// (the lease expired and was taken over). Records the write stored stay
// invisible: their write is never committed.
func (s *Store) release(ctx context.Context, room string, held stateRec, leaseRev uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	held.Lease = nil
	if _, err := s.members.Update(ctx, room, jsonBytes(held), leaseRev); err != nil && !isConflict(err) {
		s.o.Logger.Warn("a failed write did not give its room's lease back; it expires", "room", room, "err", err)
	}
}

// releaseTimeout bounds giving a lease back after a failure, which may be
// the end of the caller's context.
const releaseTimeout = 2 * time.Second

// put is a record a write stored, and the revision it got.
type put struct {
	kv    jetstream.KeyValue
	name  string
	value []byte
	rev   uint64
}

// putRecords stores ws's records tagged with write w, not settled, a few
// at a time, while w's lease (until) lasts.
func (s *Store) putRecords(ctx context.Context, room, w string, until time.Time, ws writeSet) ([]put, error) {
	puts := make([]put, 0, len(ws.keys)+len(ws.epochs))
	for _, k := range ws.keys {
		puts = append(puts, put{kv: s.keys, name: sealedKeyName(room, k.Member, k.Epoch),
			value: jsonBytes(keyRec{Sealer: k.Sealer, Sealed: k.Sealed, Sig: k.Sig, Write: w})})
	}
	for _, e := range ws.epochs {
		e.Write, e.Settled = w, false
		puts = append(puts, put{kv: s.rooms, name: epochKeyName(room, e.Epoch), value: jsonBytes(e)})
	}
	err := each(ctx, len(puts), func(ctx context.Context, i int) error {
		p := &puts[i]
		// A writer past its lease may have been taken over: a record it
		// stored now would only hide the new writer's.
		if !s.o.Now().Before(until) {
			return fmt.Errorf("the room's lease expired (a write took longer than %v): %w", s.o.LeaseTTL, store.ErrUnavailable)
		}
		var err error
		if p.rev, err = p.kv.Put(ctx, p.name, p.value); err != nil {
			return fmt.Errorf("store %s: %w", p.name, err)
		}
		return nil
	})
	return puts, err
}

// writeParallelism bounds the requests one write has in flight at once.
const writeParallelism = 16

// each runs fn(ctx, i) for i from 0 to n-1, at most writeParallelism at
// once, and returns when all have returned: nil, or the first error (after
// which it starts no more, and cancels ctx for those running).
func each(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel()
		}
	}
	sem := make(chan struct{}, writeParallelism)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if err := ctx.Err(); err != nil {
			fail(err)
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	return first
}

// settleWrite settles the records of the committed write u that are
// still tagged with it and not settled.
func (s *Store) settleWrite(ctx context.Context, room string, u writeRec) error {
	type named struct {
		kv   jetstream.KeyValue
		name string
	}
	var todo []named
	for _, m := range u.Members {
		if token("sign-pub", m) != nil {
			continue
		}
		names, err := s.epochNames(ctx, BucketRoomKeys, room+"."+m+".", u.KeysFrom, u.KeysTo)
		if err != nil {
			return err
		}
		for _, name := range names {
			todo = append(todo, named{s.keys, name})
		}
	}
	names, err := s.epochNames(ctx, BucketRooms, room+".e.", u.EpochsFrom, u.EpochsTo)
	if err != nil {
		return err
	}
	for _, name := range names {
		todo = append(todo, named{s.rooms, name})
	}
	return each(ctx, len(todo), func(ctx context.Context, i int) error {
		return settleName(ctx, todo[i].kv, todo[i].name, u.ID)
	})
}

// maxDirect is the widest range of epochs epochNames names one by one;
// beyond it, it lists the keys that exist.
const maxDirect = 64

// epochNames returns the keys prefix<epoch> of bucket for the epochs from
// to to: each of them for a short range, else the ones that exist.
func (s *Store) epochNames(ctx context.Context, bucket, prefix string, from, to uint64) ([]string, error) {
	if to < from || from == 0 {
		return nil, nil
	}
	if to-from < maxDirect {
		out := make([]string, 0, to-from+1)
		for e := from; e <= to; e++ {
			out = append(out, prefix+strconv.FormatUint(e, 10))
		}
		return out, nil
	}
	keys, err := s.listKeys(ctx, bucket, prefix+"*")
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		e, err := strconv.ParseUint(strings.TrimPrefix(k, prefix), 10, 64)
		if err == nil && e >= from && e <= to {
			out = append(out, k)
		}
	}
	return out, nil
}

// settleName settles the record name of bucket kv if it is write w's and
// not settled yet; a record that is gone or now another write's is left
// alone.
func settleName(ctx context.Context, kv jetstream.KeyValue, name, w string) error {
	for range 5 {
		e, err := kv.Get(ctx, name)
		if isGone(err) {
			return nil
		}
		if err != nil {
			return err
		}
		err = settleRecord(ctx, kv, name, w, e.Value(), e.Revision())
		if !isConflict(err) {
			return err
		}
	}
	return fmt.Errorf("settle %s: contended: %w", name, store.ErrUnavailable)
}

// settleRecord rewrites value, the record name at revision rev, with
// Settled set, if it is write w's and not settled yet. A conflict (the
// record changed since) is returned for the caller to read it again.
func settleRecord(ctx context.Context, kv jetstream.KeyValue, name, w string, value []byte, rev uint64) error {
	settled, ok := markSettled(value, w)
	if !ok {
		return nil
	}
	_, err := kv.Update(ctx, name, settled, rev)
	return err
}

// markSettled returns the record value with "settled": true, and true, if
// it is tagged with write w and not settled; the other fields are kept as
// they are, whatever the record's type.
func markSettled(value []byte, w string) ([]byte, bool) {
	var tag struct {
		Write   string `json:"write"`
		Settled bool   `json:"settled"`
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(value, &tag) != nil || tag.Write != w || tag.Settled || json.Unmarshal(value, &fields) != nil {
		return nil, false
	}
	fields["settled"] = json.RawMessage("true")
	return jsonBytes(fields), true
}

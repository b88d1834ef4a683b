package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// Records written before epoch records had keys of their own (the legacy
// format) keep the room's whole epoch history and every committed write
// id in the state record (stateRec.Epochs and Writes), and their sealed
// keys are never settled. Such a room keeps working as it is: readers
// look in Epochs before the epoch records and count Writes as committed,
// and writers never add to the two fields, so the record stops growing at
// the room's first write by this version.
//
// Upgrade then moves them out, at most once per room: it writes each
// legacy epoch as a settled epoch record, settles every sealed key of a
// write in Writes (listing the room's keys: the legacy format does not
// say which keys a write stored), and drops the two fields with a
// compare-and-set. Every step is idempotent and safe beside other writers,
// which add nothing to the fields, so nodes may run it at once, and a run
// that stops is resumed by the next. The store runs it in the background
// once it is open, rather than in the room's next write: settling a
// legacy room's keys costs a read of each, which a request's deadline may
// not allow.

// Upgrade converts every room whose state record is in the legacy format,
// and returns how many it converted.
func (s *Store) Upgrade(ctx context.Context) (int, error) {
	if err := s.check("upgrade room records"); err != nil {
		return 0, err
	}
	return s.upgrade(ctx)
}

func (s *Store) upgrade(ctx context.Context) (int, error) {
	rooms, err := s.listKeys(ctx, BucketMembers, "*")
	if err != nil {
		return 0, wrap("upgrade room records", err)
	}
	n := 0
	for _, room := range rooms {
		converted, err := s.upgradeRoom(ctx, room)
		if err != nil {
			return n, wrap("upgrade the records of room "+room, err)
		}
		if converted {
			n++
		}
	}
	return n, nil
}

// startUpgrade runs Upgrade in the background, under the store's life.
func (s *Store) startUpgrade() {
	if s.o.NoUpgrade {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		n, err := s.upgrade(s.life)
		switch {
		case err != nil && s.life.Err() == nil:
			s.o.Logger.Warn("rooms in the legacy record format were not all converted; they keep working, and the next start retries",
				"converted", n, "err", err)
		case n > 0:
			s.o.Logger.Info("rooms converted from the legacy record format", "rooms", n)
		}
	}()
}

// upgradeRoom converts one room, if its state record is in the legacy
// format. It starts over when the legacy fields changed meanwhile (a node
// of an earlier version still writes them), a few times.
func (s *Store) upgradeRoom(ctx context.Context, room string) (bool, error) {
	for range 5 {
		st, _, _, err := s.roomState(ctx, room)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if len(st.Epochs) == 0 && len(st.Writes) == 0 {
			return false, nil
		}
		if err := s.moveLegacy(ctx, room, st); err != nil {
			return false, err
		}
		done, err := s.dropLegacy(ctx, room, st)
		if done || err != nil {
			return done, err
		}
	}
	return false, fmt.Errorf("its legacy fields keep changing (is a node of an earlier version running?): %w", store.ErrUnavailable)
}

// moveLegacy writes st's legacy epochs as settled epoch records and
// settles the sealed keys of its legacy writes.
func (s *Store) moveLegacy(ctx context.Context, room string, st stateRec) error {
	for _, e := range st.Epochs {
		if e.Epoch == 0 || e.Epoch > st.Epoch {
			continue
		}
		e.Write, e.Settled = "", true
		if _, err := s.rooms.Put(ctx, epochKeyName(room, e.Epoch), jsonBytes(e)); err != nil {
			return fmt.Errorf("store the record of epoch %d: %w", e.Epoch, err)
		}
	}
	if len(st.Writes) == 0 {
		return nil
	}
	legacy := make(map[string]bool, len(st.Writes))
	for _, w := range st.Writes {
		legacy[w] = true
	}
	names, err := s.listKeys(ctx, BucketRoomKeys, room+".*.*")
	if err != nil {
		return err
	}
	for _, name := range names {
		e, err := s.keys.Get(ctx, name)
		if isGone(err) {
			continue
		}
		if err != nil {
			return err
		}
		var kr keyRec
		if json.Unmarshal(e.Value(), &kr) != nil || kr.Settled || !legacy[kr.Write] {
			continue // a corrupt record stays as it is: readers fail on it
		}
		w := kr.Write
		err = settleRecord(ctx, s.keys, name, w, e.Value(), e.Revision())
		if isConflict(err) {
			err = settleName(ctx, s.keys, name, w)
		}
		if err != nil {
			return fmt.Errorf("settle %s: %w", name, err)
		}
	}
	return nil
}

// dropLegacy removes the legacy fields from the state record if they are
// still those of was, waiting for a live lease to go first (its writer
// commits against the revision it leased). It reports false when they
// changed.
func (s *Store) dropLegacy(ctx context.Context, room string, was stateRec) (bool, error) {
	wait := 5 * time.Millisecond
	for {
		st, _, rev, err := s.roomState(ctx, room)
		if err != nil {
			return false, err
		}
		if len(st.Epochs) != len(was.Epochs) || !slices.Equal(st.Writes, was.Writes) {
			return false, nil
		}
		if st.Lease != nil && s.o.Now().Before(st.Lease.Until) {
			if err := waitLease(ctx, &wait); err != nil {
				return false, err
			}
			continue
		}
		st.Epochs, st.Writes = nil, nil
		_, err = s.members.Update(ctx, room, jsonBytes(st), rev)
		if isConflict(err) {
			continue
		}
		return err == nil, err
	}
}

package kvstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/unibus/unibus/internal/store"
)

// Epoch records live in UNIBUS_rooms beside the room's metadata, one key
// per epoch, so that the state record does not grow with the epochs and a
// reader fetches only the epoch it needs. A room id is one token, so
// <room>.e.<epoch> never collides with a room's metadata key. An epoch's
// record is written by the write that creates the epoch (create, rotate,
// remove with a rotation, import), tagged like a sealed key, and shown
// only if that write committed and the epoch is not above the room's: an
// interrupted rotation leaves nothing readable.

// epochKeyName is the UNIBUS_rooms key of one epoch's record.
func epochKeyName(room string, epoch uint64) string {
	return room + ".e." + strconv.FormatUint(epoch, 10)
}

func epochOf(room string, e epochRec) store.Epoch {
	return store.Epoch{Room: room, Epoch: e.Epoch, CreatedBy: e.By, Reason: store.EpochReason(e.Reason), CreatedAt: e.At.UTC()}
}

// Epoch implements store.Store: the state record, then the epoch's record
// (in a legacy state record, from its Epochs).
func (s *Store) Epoch(ctx context.Context, room string, epoch uint64) (store.Epoch, error) {
	op := fmt.Sprintf("epoch %d of room %s", epoch, room)
	if err := s.check(op); err != nil {
		return store.Epoch{}, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if err != nil {
		return store.Epoch{}, wrap(op, err)
	}
	if epoch == 0 || epoch > st.Epoch {
		return store.Epoch{}, wrap(op, store.ErrNotFound)
	}
	for _, e := range st.Epochs {
		if e.Epoch == epoch {
			return epochOf(room, e), nil
		}
	}
	var e epochRec
	if _, err := getJSON(ctx, s.rooms, epochKeyName(room, epoch), &e); err != nil {
		return store.Epoch{}, wrap(op, err)
	}
	if e.Epoch != epoch || !st.visible(e.Write, e.Settled) {
		return store.Epoch{}, wrap(op, store.ErrNotFound)
	}
	return epochOf(room, e), nil
}

// Epochs implements store.Store: the state record, then every epoch
// record of the room (one listing, one get each).
func (s *Store) Epochs(ctx context.Context, room string) ([]store.Epoch, error) {
	op := "epochs of room " + room
	if err := s.check(op); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if errors.Is(err, store.ErrNotFound) || (err == nil && st.Epoch == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make([]store.Epoch, 0, len(st.Epochs))
	legacy := map[uint64]bool{}
	for _, e := range st.Epochs {
		if e.Epoch >= 1 && e.Epoch <= st.Epoch && !legacy[e.Epoch] {
			legacy[e.Epoch] = true
			out = append(out, epochOf(room, e))
		}
	}
	prefix := room + ".e."
	names, err := s.listKeys(ctx, BucketRooms, prefix+"*")
	if err != nil {
		return nil, wrap(op, err)
	}
	for _, name := range names {
		epoch, err := strconv.ParseUint(strings.TrimPrefix(name, prefix), 10, 64)
		if err != nil || epoch == 0 || epoch > st.Epoch || legacy[epoch] {
			continue
		}
		var e epochRec
		if _, err := getJSON(ctx, s.rooms, name, &e); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, wrap(op, err)
		}
		if e.Epoch == epoch && st.visible(e.Write, e.Settled) {
			out = append(out, epochOf(room, e))
		}
	}
	slices.SortFunc(out, func(a, b store.Epoch) int { return cmp.Compare(a.Epoch, b.Epoch) })
	return out, nil
}

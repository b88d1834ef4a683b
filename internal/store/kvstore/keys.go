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

// A sealed key is UNIBUS_room_keys/<room>.<member>.<epoch>. It is shown
// only if its epoch is not above the room's and it is visible by its tag
// (stateRec.visible): settled, or stored by a write the state record
// lists as committed. A removed member's keys for the epochs it held stay
// visible.

// sealedKeyName is the UNIBUS_room_keys key of a member's sealed key for
// one epoch of a room.
func sealedKeyName(room, member string, epoch uint64) string {
	return room + "." + member + "." + strconv.FormatUint(epoch, 10)
}

func sealedKeyOf(room, member string, epoch uint64, kr keyRec) store.SealedKey {
	return store.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: kr.Sealer, Sealed: kr.Sealed, Sig: kr.Sig}
}

// SealedKey implements store.Store: two gets, the state record and the key.
func (s *Store) SealedKey(ctx context.Context, room, member string, epoch uint64) (store.SealedKey, error) {
	op := fmt.Sprintf("sealed key of %s for epoch %d of room %s", member, epoch, room)
	if err := s.check(op); err != nil {
		return store.SealedKey{}, err
	}
	if token("sign-pub", member) != nil {
		return store.SealedKey{}, wrap(op, store.ErrNotFound)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if err != nil {
		return store.SealedKey{}, wrap(op, err)
	}
	if epoch == 0 || epoch > st.Epoch {
		return store.SealedKey{}, wrap(op, store.ErrNotFound)
	}
	var kr keyRec
	if _, err := getJSON(ctx, s.keys, sealedKeyName(room, member, epoch), &kr); err != nil {
		return store.SealedKey{}, wrap(op, err)
	}
	if !st.visible(kr.Write, kr.Settled) {
		return store.SealedKey{}, wrap(op, store.ErrNotFound)
	}
	return sealedKeyOf(room, member, epoch, kr), nil
}

// SealedKeys returns the member's visible keys, by epoch: one listing of
// the member's keys in the room, one get each.
func (s *Store) SealedKeys(ctx context.Context, room, member string) ([]store.SealedKey, error) {
	op := fmt.Sprintf("sealed keys of %s in room %s", member, room)
	if err := s.check(op); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if token("sign-pub", member) != nil {
		return nil, nil
	}
	st, _, _, err := s.roomState(ctx, room)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	names, err := s.listKeys(ctx, BucketRoomKeys, room+"."+member+".*")
	if err != nil {
		return nil, wrap(op, err)
	}
	legacy := make(map[string]bool, len(st.Writes))
	for _, w := range st.Writes {
		legacy[w] = true
	}
	var out []store.SealedKey
	for _, name := range names {
		epoch, err := strconv.ParseUint(name[strings.LastIndexByte(name, '.')+1:], 10, 64)
		if err != nil || epoch == 0 || epoch > st.Epoch {
			continue
		}
		var kr keyRec
		if _, err := getJSON(ctx, s.keys, name, &kr); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, wrap(op, err)
		}
		if !kr.Settled && !legacy[kr.Write] && !st.committed(kr.Write) {
			continue
		}
		out = append(out, sealedKeyOf(room, member, epoch, kr))
	}
	slices.SortFunc(out, func(a, b store.SealedKey) int { return cmp.Compare(a.Epoch, b.Epoch) })
	return out, nil
}

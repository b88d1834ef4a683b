package kvstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/unibus/unibus/internal/store"
)

// RoomImport is a room's complete state, as migrate-to-kv reads it from
// another store.
type RoomImport struct {
	Room    store.Room
	Epochs  []store.Epoch
	Members []store.Member
	Keys    []store.SealedKey // the current members' keys
}

// ImportRoom writes a room that does not exist yet in the KV, with the
// same order as CreateRoom: metadata, a state record holding a lease, the
// keys and the epoch records, then the state at the room's epoch. A room
// already present is left untouched and reported with imported == false.
func (s *Store) ImportRoom(ctx context.Context, in RoomImport) (imported bool, err error) {
	r := in.Room
	op := "import room " + r.ID
	if err := s.check(op); err != nil {
		return false, err
	}
	if err := token("room", r.ID); err != nil {
		return false, wrap(op, err)
	}
	if r.Epoch < 1 || len(in.Epochs) != int(r.Epoch) {
		return false, wrap(op, fmt.Errorf("room at epoch %d with %d epoch records: %w", r.Epoch, len(in.Epochs), errInvalid))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	switch _, err := s.getRoom(ctx, r.ID); {
	case err == nil:
		return false, nil
	case !errors.Is(err, store.ErrNotFound):
		return false, wrap(op, err)
	}
	meta := roomRec{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), MaxAge: r.MaxAge, MaxBytes: r.MaxBytes, Shared: r.Shared}
	if _, err := s.rooms.Put(ctx, r.ID, jsonBytes(meta)); err != nil {
		return false, wrap(op, err)
	}
	held := stateRec{Lease: s.newLease(newWriteID())}
	rev, err := s.members.Create(ctx, r.ID, jsonBytes(held))
	if err != nil {
		if isConflict(err) {
			err = fmt.Errorf("room is being created or imported concurrently: %w", store.ErrRoomExists)
		}
		return false, wrap(op, err)
	}
	next := stateRec{Epoch: r.Epoch, Pending: r.RotationPending, Members: map[string]memberRec{}}
	for _, m := range in.Members {
		next.Members[m.SignPub] = memberRec{Role: string(m.Role), AddedBy: m.AddedBy, AddedAt: m.AddedAt.UTC()}
	}
	ws := writeSet{keys: in.Keys}
	for _, e := range in.Epochs {
		ws.epochs = append(ws.epochs, epochRec{Epoch: e.Epoch, By: e.CreatedBy, Reason: string(e.Reason), At: e.CreatedAt.UTC()})
	}
	if err := s.leasedWrite(ctx, r.ID, held, rev, next, ws); err != nil {
		return false, wrap(op, err)
	}
	for _, m := range in.Members {
		s.indexUpdate(ctx, m.SignPub, r.ID, true)
	}
	return true, nil
}

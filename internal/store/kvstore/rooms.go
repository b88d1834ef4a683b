package kvstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

// roomRec is UNIBUS_rooms/<room>: written once, when the room is created.
type roomRec struct {
	ID        string        `json:"id"`
	Name      string        `json:"name"`
	CreatedBy string        `json:"created_by"`
	CreatedAt time.Time     `json:"created_at"`
	MaxAge    time.Duration `json:"max_age"`
	MaxBytes  int64         `json:"max_bytes"`
}

// stateRec is UNIBUS_members/<room>, the primary record of everything that
// grants access to the room. Epoch 0 means "being created".
type stateRec struct {
	Epoch   uint64               `json:"epoch"`
	Pending bool                 `json:"rotation_pending,omitempty"`
	Epochs  []epochRec           `json:"epochs"`
	Members map[string]memberRec `json:"members"`
	// Writes lists the committed writes: a sealed key is visible only if
	// the write that stored it is listed.
	Writes []string  `json:"writes"`
	Lease  *leaseRec `json:"lease,omitempty"`
}

type epochRec struct {
	Epoch  uint64    `json:"epoch"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

type memberRec struct {
	Role    string    `json:"role"`
	AddedBy string    `json:"added_by"`
	AddedAt time.Time `json:"added_at"`
}

// leaseRec marks a room busy while a writer stores sealed keys.
type leaseRec struct {
	Write string    `json:"write"`
	Until time.Time `json:"until"`
}

// keyRec is UNIBUS_room_keys/<room>.<member>.<epoch>.
type keyRec struct {
	Sealer string `json:"sealer"`
	Sealed []byte `json:"sealed"`
	Sig    []byte `json:"sig"`
	Write  string `json:"write"`
}

// indexRec is UNIBUS_rooms_by_member/<sign-pub>: a superset hint of the
// user's rooms; every use is checked against the rooms' state records.
type indexRec struct {
	Rooms []string `json:"rooms"`
}

// sealedKeyName is the UNIBUS_room_keys key of a member's sealed key for
// one epoch of a room.
func sealedKeyName(room, member string, epoch uint64) string {
	return room + "." + member + "." + strconv.FormatUint(epoch, 10)
}

func newWriteID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (st *stateRec) committed(w string) bool { return slices.Contains(st.Writes, w) }

func (st *stateRec) isMember(signPub string) bool {
	_, ok := st.Members[signPub]
	return ok
}

func (st *stateRec) memberSet() map[string]bool {
	m := make(map[string]bool, len(st.Members))
	for k := range st.Members {
		m[k] = true
	}
	return m
}

// roomState reads a room's state record; a room that does not exist or is
// still being created is store.ErrNotFound.
func (s *Store) roomState(ctx context.Context, room string) (stateRec, []byte, uint64, error) {
	if token("room", room) != nil {
		return stateRec{}, nil, 0, store.ErrNotFound
	}
	e, err := s.members.Get(ctx, room)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return stateRec{}, nil, 0, store.ErrNotFound
	}
	if err != nil {
		return stateRec{}, nil, 0, err
	}
	var st stateRec
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return stateRec{}, nil, 0, fmt.Errorf("%w: corrupt room state %s: %w", store.ErrUnavailable, room, err)
	}
	if st.Members == nil {
		st.Members = map[string]memberRec{}
	}
	return st, e.Value(), e.Revision(), nil
}

// CreateRoom writes, in order: the room's metadata (create-if-absent), its
// state record at epoch 0 holding a lease (create-if-absent), the owner's
// sealed key, the state at epoch 1 with the owner (compare-and-set), and the
// owner's index entry. Until the fourth write the room does not exist for
// any reader.
func (s *Store) CreateRoom(ctx context.Context, r store.Room, owner store.Member, key store.SealedKey) error {
	op := "create room " + r.ID
	if err := s.check(op); err != nil {
		return err
	}
	if err := errors.Join(token("room", r.ID), token("sign-pub", owner.SignPub)); err != nil {
		return wrap(op, err)
	}
	if owner.Room != "" && owner.Room != r.ID {
		return wrap(op, fmt.Errorf("owner membership is for room %s: %w", owner.Room, errInvalid))
	}
	if key.Member != owner.SignPub || key.Epoch != 1 || (key.Room != "" && key.Room != r.ID) {
		return wrap(op, fmt.Errorf("the creation key must be the owner's, for epoch 1 of this room: %w", store.ErrIncompleteRotation))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.userExists(ctx, owner.SignPub); err != nil {
		return wrap(op, err)
	}
	meta := roomRec{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), MaxAge: r.MaxAge, MaxBytes: r.MaxBytes}
	if _, err := s.rooms.Create(ctx, r.ID, jsonBytes(meta)); err != nil {
		if !isConflict(err) {
			return wrap(op, err)
		}
		// Another creation of this id, or ours that crashed: only the
		// same creator may continue, and only until the room exists.
		var had roomRec
		if _, err := getJSON(ctx, s.rooms, r.ID, &had); err != nil {
			return wrap(op, err)
		}
		if had.CreatedBy != r.CreatedBy {
			return wrap(op, store.ErrRoomExists)
		}
		meta = had
	}
	w := newWriteID()
	lease := stateRec{Lease: &leaseRec{Write: w, Until: s.o.Now().Add(s.o.LeaseTTL).UTC()}}
	rev, err := s.members.Create(ctx, r.ID, jsonBytes(lease))
	if err != nil {
		if !isConflict(err) {
			return wrap(op, err)
		}
		st, _, srev, err := s.roomState(ctx, r.ID)
		if err != nil {
			return wrap(op, err)
		}
		if st.Epoch != 0 || (st.Lease != nil && s.o.Now().Before(st.Lease.Until)) {
			return wrap(op, store.ErrRoomExists)
		}
		if rev, err = s.members.Update(ctx, r.ID, jsonBytes(lease), srev); err != nil {
			if isConflict(err) {
				err = store.ErrRoomExists
			}
			return wrap(op, err)
		}
	}
	kr := keyRec{Sealer: key.Sealer, Sealed: key.Sealed, Sig: key.Sig, Write: w}
	if _, err := s.keys.Put(ctx, sealedKeyName(r.ID, owner.SignPub, 1), jsonBytes(kr)); err != nil {
		return wrap(op, err)
	}
	st := stateRec{
		Epoch:   1,
		Epochs:  []epochRec{{Epoch: 1, By: meta.CreatedBy, Reason: string(store.EpochCreate), At: meta.CreatedAt}},
		Members: map[string]memberRec{owner.SignPub: {Role: string(store.RoomOwner), AddedBy: owner.AddedBy, AddedAt: owner.AddedAt.UTC()}},
		Writes:  []string{w},
	}
	if _, err := s.members.Update(ctx, r.ID, jsonBytes(st), rev); err != nil {
		if isConflict(err) {
			err = fmt.Errorf("lost the creation lease: %w", store.ErrUnavailable)
		}
		return wrap(op, err)
	}
	s.indexUpdate(ctx, owner.SignPub, r.ID, true)
	return nil
}

func (s *Store) userExists(ctx context.Context, signPub string) error {
	var u userRec
	_, err := getJSON(ctx, s.users, userKey(signPub), &u)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("user %s: %w", signPub, store.ErrNotFound)
	}
	return err
}

// GetRoom implements store.Store.
func (s *Store) GetRoom(ctx context.Context, id string) (store.Room, error) {
	if err := s.check("get room " + id); err != nil {
		return store.Room{}, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	r, err := s.getRoom(ctx, id)
	return r, wrap("get room "+id, err)
}

func (s *Store) getRoom(ctx context.Context, id string) (store.Room, error) {
	st, _, _, err := s.roomState(ctx, id)
	if err != nil {
		return store.Room{}, err
	}
	if st.Epoch == 0 {
		return store.Room{}, store.ErrNotFound
	}
	var meta roomRec
	if _, err := getJSON(ctx, s.rooms, id, &meta); err != nil {
		return store.Room{}, err
	}
	return store.Room{ID: meta.ID, Name: meta.Name, CreatedBy: meta.CreatedBy, CreatedAt: meta.CreatedAt.UTC(),
		Epoch: st.Epoch, RotationPending: st.Pending, MaxAge: meta.MaxAge, MaxBytes: meta.MaxBytes}, nil
}

// RoomIDs reads the user's index entry and keeps the rooms whose state
// record lists the user: the index can only ever narrow access.
func (s *Store) RoomIDs(ctx context.Context, signPub string) ([]string, error) {
	if err := s.check("list room ids of " + signPub); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ids, err := s.roomIDs(ctx, signPub)
	return ids, wrap("list room ids of "+signPub, err)
}

func (s *Store) roomIDs(ctx context.Context, signPub string) ([]string, error) {
	if token("sign-pub", signPub) != nil {
		return nil, nil
	}
	var idx indexRec
	if _, err := getJSON(ctx, s.byMember, signPub, &idx); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, id := range idx.Rooms {
		st, _, _, err := s.roomState(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if st.Epoch > 0 && st.isMember(signPub) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ListRooms implements store.Store.
func (s *Store) ListRooms(ctx context.Context, signPub string) ([]store.Room, error) {
	op := "list rooms of " + signPub
	if err := s.check(op); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ids, err := s.roomIDs(ctx, signPub)
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make([]store.Room, 0, len(ids))
	for _, id := range ids {
		r, err := s.getRoom(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b store.Room) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// ListMembers implements store.Store.
func (s *Store) ListMembers(ctx context.Context, room string) ([]store.Member, error) {
	if err := s.check("list members of room " + room); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if errors.Is(err, store.ErrNotFound) || (err == nil && st.Epoch == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("list members of room "+room, err)
	}
	out := make([]store.Member, 0, len(st.Members))
	for pub, m := range st.Members {
		out = append(out, memberOf(room, pub, m))
	}
	slices.SortFunc(out, func(a, b store.Member) int { return strings.Compare(a.SignPub, b.SignPub) })
	return out, nil
}

func memberOf(room, pub string, m memberRec) store.Member {
	return store.Member{Room: room, SignPub: pub, Role: store.RoomRole(m.Role), AddedBy: m.AddedBy, AddedAt: m.AddedAt.UTC()}
}

// GetMember implements store.Store.
func (s *Store) GetMember(ctx context.Context, room, signPub string) (store.Member, error) {
	op := fmt.Sprintf("get member %s of room %s", signPub, room)
	if err := s.check(op); err != nil {
		return store.Member{}, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if errors.Is(err, store.ErrNotFound) {
		return store.Member{}, wrap(op, store.ErrNotMember)
	}
	if err != nil {
		return store.Member{}, wrap(op, err)
	}
	m, ok := st.Members[signPub]
	if !ok || st.Epoch == 0 {
		return store.Member{}, wrap(op, store.ErrNotMember)
	}
	return memberOf(room, signPub, m), nil
}

// AddMember implements store.Store (see mutate for the write order).
func (s *Store) AddMember(ctx context.Context, m store.Member, keys []store.SealedKey) error {
	op := fmt.Sprintf("add member %s to room %s", m.SignPub, m.Room)
	if err := s.check(op); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if token("sign-pub", m.SignPub) != nil {
		return wrap(op, fmt.Errorf("user %s: %w", m.SignPub, store.ErrNotFound))
	}
	already := false
	err := s.mutate(ctx, m.Room, func(st *stateRec) ([]store.SealedKey, error) {
		if err := s.userExists(ctx, m.SignPub); err != nil {
			return nil, err
		}
		if st.isMember(m.SignPub) {
			already = true
			return nil, store.ErrAlreadyMember
		}
		if err := store.CheckJoinKeys(m, keys, st.Epoch); err != nil {
			return nil, err
		}
		st.Members[m.SignPub] = memberRec{Role: string(m.Role), AddedBy: m.AddedBy, AddedAt: m.AddedAt.UTC()}
		return keys, nil
	})
	if err == nil || already {
		// Also repairs an index entry that a crash left out.
		s.indexUpdate(ctx, m.SignPub, m.Room, true)
	}
	return wrap(op, err)
}

// RemoveMember implements store.Store.
func (s *Store) RemoveMember(ctx context.Context, room, signPub string, rot *store.Rotation) error {
	op := fmt.Sprintf("remove member %s from room %s", signPub, room)
	if err := s.check(op); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := s.mutate(ctx, room, func(st *stateRec) ([]store.SealedKey, error) {
		if !st.isMember(signPub) {
			return nil, store.ErrNotMember
		}
		delete(st.Members, signPub)
		if rot == nil {
			st.Pending = true
			return nil, nil
		}
		r := *rot
		if r.Room != room {
			return nil, fmt.Errorf("the rotation is for room %s: %w", r.Room, errInvalid)
		}
		if r.Reason == "" {
			r.Reason = store.EpochRemove
		}
		return rotate(st, r)
	})
	if err == nil {
		s.indexUpdate(ctx, signPub, room, false)
	}
	return wrap(op, err)
}

// Rotate implements store.Store.
func (s *Store) Rotate(ctx context.Context, rot store.Rotation) error {
	op := fmt.Sprintf("rotate room %s to epoch %d", rot.Room, rot.Epoch)
	if err := s.check(op); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if rot.Reason == "" {
		rot.Reason = store.EpochRotate
	}
	return wrap(op, s.mutate(ctx, rot.Room, func(st *stateRec) ([]store.SealedKey, error) {
		return rotate(st, rot)
	}))
}

// rotate applies rot to st (the epoch first, so that concurrent rotations
// to the same epoch lose with ErrStaleEpoch) and returns its keys.
func rotate(st *stateRec, rot store.Rotation) ([]store.SealedKey, error) {
	if rot.Epoch != st.Epoch+1 {
		return nil, fmt.Errorf("the room is at epoch %d, the rotation is to %d: %w", st.Epoch, rot.Epoch, store.ErrStaleEpoch)
	}
	if err := store.CheckCoverage(rot, st.memberSet()); err != nil {
		return nil, err
	}
	st.Epochs = append(st.Epochs, epochRec{Epoch: rot.Epoch, By: rot.By, Reason: string(rot.Reason), At: rot.At.UTC()})
	st.Epoch, st.Pending = rot.Epoch, false
	return rot.Keys, nil
}

// mutate applies fn to the room's state record. Without keys it is one
// compare-and-set. With keys it is three writes: (1) a compare-and-set
// that takes the room's lease on the unchanged state, (2) the sealed keys,
// tagged with this write's id, (3) a compare-and-set to the new state that
// lists the write as committed and drops the lease. A writer that finds a
// live lease waits for it; an expired one is taken over. fn runs again on
// every retry, against the state it is about to replace.
func (s *Store) mutate(ctx context.Context, room string, fn func(*stateRec) ([]store.SealedKey, error)) error {
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
			select {
			case <-ctx.Done():
				return fmt.Errorf("room is busy (a write holds its lease): %w: %w", store.ErrUnavailable, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 200*time.Millisecond)
			continue
		}
		keys, err := fn(&st)
		if err != nil {
			return err
		}
		st.Lease = nil
		if len(keys) == 0 {
			_, err := s.members.Update(ctx, room, jsonBytes(st), rev)
			if isConflict(err) {
				continue
			}
			return err
		}
		w := newWriteID()
		var held stateRec
		if err := json.Unmarshal(raw, &held); err != nil {
			return err
		}
		held.Lease = &leaseRec{Write: w, Until: s.o.Now().Add(s.o.LeaseTTL).UTC()}
		rev2, err := s.members.Update(ctx, room, jsonBytes(held), rev)
		if isConflict(err) {
			continue
		}
		if err != nil {
			return err
		}
		for _, k := range keys {
			kr := keyRec{Sealer: k.Sealer, Sealed: k.Sealed, Sig: k.Sig, Write: w}
			if _, err := s.keys.Put(ctx, sealedKeyName(room, k.Member, k.Epoch), jsonBytes(kr)); err != nil {
				return fmt.Errorf("store sealed key of %s for epoch %d: %w", k.Member, k.Epoch, err)
			}
		}
		st.Writes = append(st.Writes, w)
		if _, err := s.members.Update(ctx, room, jsonBytes(st), rev2); err != nil {
			if isConflict(err) {
				return fmt.Errorf("lost the room's lease (a write took longer than %v): %w", s.o.LeaseTTL, store.ErrUnavailable)
			}
			return err
		}
		return nil
	}
}

// indexUpdate adds room to (or removes it from) the user's index entry.
// It runs after the state record changed; a failure is logged, not
// returned: a missing entry only narrows access until the next write of
// the membership or Repair, and a stale one is filtered by every reader.
func (s *Store) indexUpdate(ctx context.Context, signPub, room string, add bool) {
	if err := s.indexUpdateErr(ctx, signPub, room, add); err != nil {
		s.o.Logger.Warn("rooms_by_member index not updated; Repair or the next membership write fixes it",
			"sign_pub", signPub, "room", room, "add", add, "err", err)
	}
}

func (s *Store) indexUpdateErr(ctx context.Context, signPub, room string, add bool) error {
	for range 10 {
		var idx indexRec
		rev, err := getJSON(ctx, s.byMember, signPub, &idx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		i, found := slices.BinarySearch(idx.Rooms, room)
		switch {
		case add && found, !add && !found:
			return nil
		case add:
			idx.Rooms = slices.Insert(idx.Rooms, i, room)
		default:
			idx.Rooms = slices.Delete(idx.Rooms, i, i+1)
		}
		if rev == 0 {
			_, err = s.byMember.Create(ctx, signPub, jsonBytes(idx))
		} else {
			_, err = s.byMember.Update(ctx, signPub, jsonBytes(idx), rev)
		}
		if !isConflict(err) {
			return err
		}
	}
	return fmt.Errorf("contended: %w", store.ErrUnavailable)
}

// Repair makes every user's index entry list exactly the rooms whose state
// record names the user. membershipd runs it at start in kv mode.
func (s *Store) Repair(ctx context.Context) (fixed int, err error) {
	if err := s.check("repair index"); err != nil {
		return 0, err
	}
	rooms, err := s.listKeys(ctx, BucketMembers, "*")
	if err != nil {
		return 0, wrap("repair index", err)
	}
	want := map[string][]string{}
	for _, id := range rooms {
		st, _, _, err := s.roomState(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fixed, wrap("repair index", err)
		}
		for pub := range st.Members {
			if st.Epoch > 0 {
				want[pub] = append(want[pub], id)
			}
		}
	}
	for pub, ids := range want {
		for _, id := range ids {
			var idx indexRec
			if _, err := getJSON(ctx, s.byMember, pub, &idx); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fixed, wrap("repair index", err)
			}
			if _, found := slices.BinarySearch(idx.Rooms, id); !found {
				if err := s.indexUpdateErr(ctx, pub, id, true); err != nil {
					return fixed, wrap("repair index", err)
				}
				fixed++
			}
		}
	}
	return fixed, nil
}

// SealedKeys returns the member's keys of committed writes, by epoch.
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
	var out []store.SealedKey
	for _, name := range names {
		epoch, err := strconv.ParseUint(name[strings.LastIndexByte(name, '.')+1:], 10, 64)
		if err != nil || epoch > st.Epoch {
			continue
		}
		var kr keyRec
		if _, err := getJSON(ctx, s.keys, name, &kr); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, wrap(op, err)
		}
		if !st.committed(kr.Write) {
			continue
		}
		out = append(out, store.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: kr.Sealer, Sealed: kr.Sealed, Sig: kr.Sig})
	}
	slices.SortFunc(out, func(a, b store.SealedKey) int { return cmp.Compare(a.Epoch, b.Epoch) })
	return out, nil
}

// Epochs implements store.Store.
func (s *Store) Epochs(ctx context.Context, room string) ([]store.Epoch, error) {
	if err := s.check("epochs of room " + room); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, _, _, err := s.roomState(ctx, room)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("epochs of room "+room, err)
	}
	out := make([]store.Epoch, 0, len(st.Epochs))
	for _, e := range st.Epochs {
		out = append(out, store.Epoch{Room: room, Epoch: e.Epoch, CreatedBy: e.By, Reason: store.EpochReason(e.Reason), CreatedAt: e.At.UTC()})
	}
	return out, nil
}

package kvstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	// Shared is absent from records written before protocol 2: those
	// rooms have streams of their own.
	Shared bool `json:"shared,omitempty"`
}

// stateRec is UNIBUS_members/<room>, the primary record of everything that
// grants access to the room. Epoch 0 means "being created". Its size does
// not grow with the room's epochs or writes: it holds the members, at
// most one write not yet settled (write.go) and a lease.
type stateRec struct {
	Epoch   uint64               `json:"epoch"`
	Pending bool                 `json:"rotation_pending,omitempty"`
	Members map[string]memberRec `json:"members"`
	// Unsettled lists the committed writes whose records may not all be
	// marked settled yet: a record of a write listed here is visible.
	Unsettled []writeRec `json:"unsettled,omitempty"`
	Lease     *leaseRec  `json:"lease,omitempty"`

	// Epochs and Writes are the legacy format (upgrade.go): the room's
	// epoch history and every committed write, in records written before
	// epoch records had keys of their own. No write adds to them; Upgrade
	// moves them out.
	Epochs []epochRec `json:"epochs,omitempty"`
	Writes []string   `json:"writes,omitempty"`
}

// epochRec is an epoch's record, UNIBUS_rooms/<room>.e.<epoch>, tagged
// like a sealed key with the write that stored it. In a legacy state
// record's Epochs it has no tag.
type epochRec struct {
	Epoch   uint64    `json:"epoch"`
	By      string    `json:"by"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Write   string    `json:"write,omitempty"`
	Settled bool      `json:"settled,omitempty"`
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

// keyRec is UNIBUS_room_keys/<room>.<member>.<epoch>. It is visible once
// Settled, or while the state record lists Write as committed.
type keyRec struct {
	Sealer  string `json:"sealer"`
	Sealed  []byte `json:"sealed"`
	Sig     []byte `json:"sig"`
	Write   string `json:"write"`
	Settled bool   `json:"settled,omitempty"`
}

// indexRec is UNIBUS_rooms_by_member/<sign-pub>: a superset hint of the
// user's rooms; every use is checked against the rooms' state records.
type indexRec struct {
	Rooms []string `json:"rooms"`
}

func newWriteID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// committed reports whether the state lists write w as committed.
func (st *stateRec) committed(w string) bool {
	if w == "" {
		return false
	}
	for _, u := range st.Unsettled {
		if u.ID == w {
			return true
		}
	}
	return slices.Contains(st.Writes, w)
}

// visible reports whether a record (a sealed key or an epoch record)
// tagged with write and settled may be shown: it is settled, or its
// write is committed. The caller also checks the record's epoch against
// the room's.
func (st *stateRec) visible(write string, settled bool) bool {
	return settled || st.committed(write)
}

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
// sealed key and the record of epoch 1, the state at epoch 1 with the
// owner (compare-and-set; see leasedWrite for what follows), and the
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
	meta := roomRec{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), MaxAge: r.MaxAge, MaxBytes: r.MaxBytes, Shared: r.Shared}
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
	held := stateRec{Lease: s.newLease(w)}
	rev, err := s.members.Create(ctx, r.ID, jsonBytes(held))
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
		if rev, err = s.members.Update(ctx, r.ID, jsonBytes(held), srev); err != nil {
			if isConflict(err) {
				err = store.ErrRoomExists
			}
			return wrap(op, err)
		}
	}
	key.Room = r.ID
	next := stateRec{
		Epoch:   1,
		Members: map[string]memberRec{owner.SignPub: {Role: string(store.RoomOwner), AddedBy: owner.AddedBy, AddedAt: owner.AddedAt.UTC()}},
	}
	ws := writeSet{
		keys:   []store.SealedKey{key},
		epochs: []epochRec{{Epoch: 1, By: meta.CreatedBy, Reason: string(store.EpochCreate), At: meta.CreatedAt}},
	}
	if err := s.leasedWrite(ctx, r.ID, held, rev, next, ws); err != nil {
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
		Epoch: st.Epoch, RotationPending: st.Pending, MaxAge: meta.MaxAge, MaxBytes: meta.MaxBytes, Shared: meta.Shared}, nil
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
	err := s.mutate(ctx, m.Room, func(st *stateRec) (writeSet, error) {
		if err := s.userExists(ctx, m.SignPub); err != nil {
			return writeSet{}, err
		}
		if st.isMember(m.SignPub) {
			already = true
			return writeSet{}, store.ErrAlreadyMember
		}
		if err := store.CheckJoinKeys(m, keys, st.Epoch); err != nil {
			return writeSet{}, err
		}
		st.Members[m.SignPub] = memberRec{Role: string(m.Role), AddedBy: m.AddedBy, AddedAt: m.AddedAt.UTC()}
		return writeSet{keys: keys}, nil
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
	err := s.mutate(ctx, room, func(st *stateRec) (writeSet, error) {
		if !st.isMember(signPub) {
			return writeSet{}, store.ErrNotMember
		}
		delete(st.Members, signPub)
		if rot == nil {
			st.Pending = true
			return writeSet{}, nil
		}
		r := *rot
		if r.Room != room {
			return writeSet{}, fmt.Errorf("the rotation is for room %s: %w", r.Room, errInvalid)
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
	return wrap(op, s.mutate(ctx, rot.Room, func(st *stateRec) (writeSet, error) {
		return rotate(st, rot)
	}))
}

// rotate applies rot to st (the epoch first, so that concurrent rotations
// to the same epoch lose with ErrStaleEpoch) and returns its keys and the
// new epoch's record.
func rotate(st *stateRec, rot store.Rotation) (writeSet, error) {
	if rot.Epoch != st.Epoch+1 {
		return writeSet{}, fmt.Errorf("the room is at epoch %d, the rotation is to %d: %w", st.Epoch, rot.Epoch, store.ErrStaleEpoch)
	}
	if err := store.CheckCoverage(rot, st.memberSet()); err != nil {
		return writeSet{}, err
	}
	st.Epoch, st.Pending = rot.Epoch, false
	return writeSet{
		keys:   rot.Keys,
		epochs: []epochRec{{Epoch: rot.Epoch, By: rot.By, Reason: string(rot.Reason), At: rot.At.UTC()}},
	}, nil
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

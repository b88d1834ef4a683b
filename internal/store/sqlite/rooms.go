package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/unibus/unibus/internal/store"
)

const roomColumns = `id, name, created_by, created_at, epoch, rotation_pending, max_age, max_bytes, shared`

func scanRoom(row interface{ Scan(...any) error }) (store.Room, error) {
	var r store.Room
	var created, maxAge int64
	if err := row.Scan(&r.ID, &r.Name, &r.CreatedBy, &created, &r.Epoch, &r.RotationPending, &maxAge, &r.MaxBytes, &r.Shared); err != nil {
		return store.Room{}, err
	}
	r.CreatedAt, r.MaxAge = fromDB(created), time.Duration(maxAge)
	return r, nil
}

const memberColumns = `room, sign_pub, role, added_by, added_at`

func scanMember(row interface{ Scan(...any) error }) (store.Member, error) {
	var m store.Member
	var role string
	var added int64
	if err := row.Scan(&m.Room, &m.SignPub, &role, &m.AddedBy, &added); err != nil {
		return store.Member{}, err
	}
	m.Role, m.AddedAt = store.RoomRole(role), fromDB(added)
	return m, nil
}

// CreateRoom creates the room at epoch 1 with its owner, the owner's
// sealed key for epoch 1 and the epoch record, in one transaction. The
// store sets the epoch, the pending flag and the owner's role itself. An
// owner who is not a registered user is ErrNotFound; a key that is not the
// owner's for epoch 1 is ErrIncompleteRotation.
func (s *Store) CreateRoom(ctx context.Context, r store.Room, owner store.Member, key store.SealedKey) error {
	joined := store.Change{Kind: store.ChangeRoom, Room: r.ID, Joined: []string{owner.SignPub}}
	return s.writeReported(ctx, "create room "+r.ID, joined, func(ctx context.Context, tx *sql.Tx) error {
		if owner.Room != "" && owner.Room != r.ID {
			return fmt.Errorf("owner membership is for room %s", owner.Room)
		}
		if key.Member != owner.SignPub || key.Epoch != 1 || (key.Room != "" && key.Room != r.ID) {
			return fmt.Errorf("the creation key must be the owner's, for epoch 1 of this room: %w", store.ErrIncompleteRotation)
		}
		if err := userExists(ctx, tx, owner.SignPub); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO rooms (`+roomColumns+`) VALUES (?, ?, ?, ?, 1, 0, ?, ?, ?)`,
			r.ID, r.Name, r.CreatedBy, toDB(r.CreatedAt), int64(r.MaxAge), r.MaxBytes, r.Shared)
		if isUnique(err) {
			return store.ErrRoomExists
		}
		if err != nil {
			return err
		}
		if err := insertEpoch(ctx, tx, store.Epoch{Room: r.ID, Epoch: 1, CreatedBy: r.CreatedBy, Reason: store.EpochCreate, CreatedAt: r.CreatedAt}); err != nil {
			return err
		}
		owner.Room, owner.Role = r.ID, store.RoomOwner
		if err := insertMember(ctx, tx, owner); err != nil {
			return err
		}
		key.Room = r.ID
		return insertKeys(ctx, tx, []store.SealedKey{key}, false)
	})
}

// GetRoom returns the room, or ErrNotFound.
func (s *Store) GetRoom(ctx context.Context, id string) (store.Room, error) {
	r, err := scanRoom(s.r.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rooms WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Room{}, wrap("get room "+id, err)
	}
	return r, nil
}

// ListRooms returns the rooms signPub is a member of, ordered by name (then id).
func (s *Store) ListRooms(ctx context.Context, signPub string) ([]store.Room, error) {
	op := "list rooms of " + signPub
	rows, err := s.r.QueryContext(ctx, `SELECT r.id, r.name, r.created_by, r.created_at, r.epoch, r.rotation_pending, r.max_age, r.max_bytes, r.shared
		FROM members m JOIN rooms r ON r.id = m.room WHERE m.sign_pub = ? ORDER BY r.name, r.id`, signPub)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Room
	for rows.Next() {
		r, err := scanRoom(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// RoomIDs returns the ids of the rooms signPub is a member of, in id order.
func (s *Store) RoomIDs(ctx context.Context, signPub string) ([]string, error) {
	op := "list room ids of " + signPub
	rows, err := s.roomIDsStmt.QueryContext(ctx, signPub)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// ListMembers returns the room's current members, ordered by sign-pub.
func (s *Store) ListMembers(ctx context.Context, room string) ([]store.Member, error) {
	op := "list members of room " + room
	rows, err := s.r.QueryContext(ctx, `SELECT `+memberColumns+` FROM members WHERE room = ? ORDER BY sign_pub`, room)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Member
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// GetMember returns one membership, or ErrNotMember.
func (s *Store) GetMember(ctx context.Context, room, signPub string) (store.Member, error) {
	m, err := scanMember(s.r.QueryRowContext(ctx, `SELECT `+memberColumns+` FROM members WHERE room = ? AND sign_pub = ?`, room, signPub))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotMember
	}
	if err != nil {
		return store.Member{}, wrap(fmt.Sprintf("get member %s of room %s", signPub, room), err)
	}
	return m, nil
}

// SealedKeys returns member's sealed keys for the room, by epoch. A removed
// member's keys for the epochs it held are still returned.
func (s *Store) SealedKeys(ctx context.Context, room, member string) ([]store.SealedKey, error) {
	op := fmt.Sprintf("sealed keys of %s in room %s", member, room)
	rows, err := s.r.QueryContext(ctx, `SELECT room, epoch, member, sealer, sealed, sig FROM sealed_keys
		WHERE room = ? AND member = ? ORDER BY epoch`, room, member)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.SealedKey
	for rows.Next() {
		var k store.SealedKey
		if err := rows.Scan(&k.Room, &k.Epoch, &k.Member, &k.Sealer, &k.Sealed, &k.Sig); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// Epochs returns the room's epochs in order.
func (s *Store) Epochs(ctx context.Context, room string) ([]store.Epoch, error) {
	op := "epochs of room " + room
	rows, err := s.r.QueryContext(ctx, `SELECT room, epoch, created_by, reason, created_at FROM epochs
		WHERE room = ? ORDER BY epoch`, room)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Epoch
	for rows.Next() {
		var e store.Epoch
		var reason string
		var created int64
		if err := rows.Scan(&e.Room, &e.Epoch, &e.CreatedBy, &reason, &created); err != nil {
			return nil, wrap(op, err)
		}
		e.Reason, e.CreatedAt = store.EpochReason(reason), fromDB(created)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// Sealed-key and epoch lookups: one row each, by primary key, prepared
// once (clients fetch the keys of the epochs they need one at a time).
const (
	sealedKeyQuery = `SELECT k.room, k.epoch, k.member, k.sealer, k.sealed, k.sig FROM sealed_keys k
		JOIN rooms r ON r.id = k.room WHERE k.room = ? AND k.member = ? AND k.epoch = ? AND k.epoch <= r.epoch`
	epochQuery = `SELECT e.room, e.epoch, e.created_by, e.reason, e.created_at FROM epochs e
		JOIN rooms r ON r.id = e.room WHERE e.room = ? AND e.epoch = ? AND e.epoch <= r.epoch`
)

// SealedKey returns member's sealed key for one epoch of the room, or
// ErrNotFound. A key is stored only by a committed transaction and never
// for an epoch above the room's; the query checks the epoch all the same.
func (s *Store) SealedKey(ctx context.Context, room, member string, epoch uint64) (store.SealedKey, error) {
	var k store.SealedKey
	err := sql.ErrNoRows // an epoch beyond SQLite's integers exists nowhere
	if epoch <= math.MaxInt64 {
		err = s.sealedKeyStmt.QueryRowContext(ctx, room, member, epoch).Scan(&k.Room, &k.Epoch, &k.Member, &k.Sealer, &k.Sealed, &k.Sig)
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.SealedKey{}, wrap(fmt.Sprintf("sealed key of %s for epoch %d of room %s", member, epoch, room), err)
	}
	return k, nil
}

// Epoch returns one epoch's record, or ErrNotFound.
func (s *Store) Epoch(ctx context.Context, room string, epoch uint64) (store.Epoch, error) {
	var e store.Epoch
	var reason string
	var created int64
	err := sql.ErrNoRows
	if epoch <= math.MaxInt64 {
		err = s.epochStmt.QueryRowContext(ctx, room, epoch).Scan(&e.Room, &e.Epoch, &e.CreatedBy, &reason, &created)
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Epoch{}, wrap(fmt.Sprintf("epoch %d of room %s", epoch, room), err)
	}
	e.Reason, e.CreatedAt = store.EpochReason(reason), fromDB(created)
	return e, nil
}

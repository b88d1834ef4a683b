package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/unibus/unibus/internal/store"
)

// AddMember adds m with its sealed keys. The keys must all be for m.SignPub
// and this room, one per epoch, none later than the current epoch, and one
// for the current epoch (else ErrIncompleteRotation). Keys for epochs a
// re-added member held before replace the earlier seals. An unknown room
// or user is ErrNotFound.
func (s *Store) AddMember(ctx context.Context, m store.Member, keys []store.SealedKey) error {
	joined := store.Change{Kind: store.ChangeRoom, Room: m.Room, Joined: []string{m.SignPub}}
	return s.writeReported(ctx, fmt.Sprintf("add member %s to room %s", m.SignPub, m.Room), joined, func(ctx context.Context, tx *sql.Tx) error {
		epoch, err := roomEpoch(ctx, tx, m.Room)
		if err != nil {
			return err
		}
		if err := userExists(ctx, tx, m.SignPub); err != nil {
			return err
		}
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM members WHERE room = ? AND sign_pub = ?`, m.Room, m.SignPub).Scan(&one); {
		case err == nil:
			return store.ErrAlreadyMember
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if err := store.CheckJoinKeys(m, keys, epoch); err != nil {
			return err
		}
		if err := insertMember(ctx, tx, m); err != nil {
			if isUnique(err) {
				return store.ErrAlreadyMember
			}
			return err
		}
		return insertKeys(ctx, tx, keys, true)
	})
}

// RemoveMember removes signPub from the room, and with rot non-nil moves
// the room to rot.Epoch in the same transaction (rot.Keys must cover the
// remaining members); with rot nil it marks the room RotationPending. The
// removed member's earlier sealed keys are kept. An unknown room is
// ErrNotFound.
func (s *Store) RemoveMember(ctx context.Context, room, signPub string, rot *store.Rotation) error {
	left := store.Change{Kind: store.ChangeRoom, Room: room, Left: []string{signPub}}
	return s.writeReported(ctx, fmt.Sprintf("remove member %s from room %s", signPub, room), left, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := roomEpoch(ctx, tx, room); err != nil {
			return err
		}
		if err := changedOne(tx.ExecContext(ctx, `DELETE FROM members WHERE room = ? AND sign_pub = ?`, room, signPub))(store.ErrNotMember); err != nil {
			return err
		}
		if rot == nil {
			_, err := tx.ExecContext(ctx, `UPDATE rooms SET rotation_pending = 1 WHERE id = ?`, room)
			return err
		}
		r := *rot
		if r.Room != room {
			return fmt.Errorf("the rotation is for room %s", r.Room)
		}
		if r.Reason == "" {
			r.Reason = store.EpochRemove
		}
		// The member is already deleted: the rotation must cover the
		// remaining members only.
		return rotate(ctx, tx, r)
	})
}

// Rotate moves the room to rot.Epoch with keys for every current member and
// clears RotationPending.
func (s *Store) Rotate(ctx context.Context, rot store.Rotation) error {
	rotated := store.Change{Kind: store.ChangeRoom, Room: rot.Room}
	return s.writeReported(ctx, fmt.Sprintf("rotate room %s to epoch %d", rot.Room, rot.Epoch), rotated, func(ctx context.Context, tx *sql.Tx) error {
		if rot.Reason == "" {
			rot.Reason = store.EpochRotate
		}
		return rotate(ctx, tx, rot)
	})
}

// rotate checks rot against the room inside tx, then records the epoch,
// its keys and the room's new epoch. The epoch is checked first, so that of
// concurrent rotations to the same epoch all but the first fail with
// ErrStaleEpoch.
func rotate(ctx context.Context, tx *sql.Tx, rot store.Rotation) error {
	epoch, err := roomEpoch(ctx, tx, rot.Room)
	if err != nil {
		return err
	}
	if rot.Epoch != epoch+1 {
		return fmt.Errorf("the room is at epoch %d, the rotation is to %d: %w", epoch, rot.Epoch, store.ErrStaleEpoch)
	}
	members, err := memberSet(ctx, tx, rot.Room)
	if err != nil {
		return err
	}
	if err := store.CheckCoverage(rot, members); err != nil {
		return err
	}
	if err := insertEpoch(ctx, tx, store.Epoch{Room: rot.Room, Epoch: rot.Epoch, CreatedBy: rot.By, Reason: rot.Reason, CreatedAt: rot.At}); err != nil {
		return err
	}
	if err := insertKeys(ctx, tx, rot.Keys, false); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE rooms SET epoch = ?, rotation_pending = 0 WHERE id = ?`, rot.Epoch, rot.Room)
	return err
}

// roomEpoch returns the room's current epoch, or ErrNotFound.
func roomEpoch(ctx context.Context, tx *sql.Tx, room string) (uint64, error) {
	var epoch uint64
	err := tx.QueryRowContext(ctx, `SELECT epoch FROM rooms WHERE id = ?`, room).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("room %s: %w", room, store.ErrNotFound)
	}
	return epoch, err
}

// memberSet returns the room's current members.
func memberSet(ctx context.Context, tx *sql.Tx, room string) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT sign_pub FROM members WHERE room = ?`, room)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, err
		}
		out[m] = true
	}
	return out, rows.Err()
}

// userExists returns ErrNotFound unless signPub is a registered user.
func userExists(ctx context.Context, tx *sql.Tx, signPub string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE sign_pub = ?`, signPub).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("user %s: %w", signPub, store.ErrNotFound)
	}
	return err
}

func insertEpoch(ctx context.Context, tx *sql.Tx, e store.Epoch) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO epochs (room, epoch, created_by, reason, created_at) VALUES (?, ?, ?, ?, ?)`,
		e.Room, e.Epoch, e.CreatedBy, string(e.Reason), toDB(e.CreatedAt))
	return err
}

func insertMember(ctx context.Context, tx *sql.Tx, m store.Member) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO members (`+memberColumns+`) VALUES (?, ?, ?, ?, ?)`,
		m.Room, m.SignPub, string(m.Role), m.AddedBy, toDB(m.AddedAt))
	return err
}

// insertKeys stores sealed keys; with replace, a key for a (room, member,
// epoch) that already has one replaces it.
func insertKeys(ctx context.Context, tx *sql.Tx, keys []store.SealedKey, replace bool) error {
	q := `INSERT INTO sealed_keys (room, member, epoch, sealer, sealed, sig) VALUES (?, ?, ?, ?, ?, ?)`
	if replace {
		q += ` ON CONFLICT (room, member, epoch) DO UPDATE SET sealer = excluded.sealer, sealed = excluded.sealed, sig = excluded.sig`
	}
	stmt, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, k := range keys {
		if _, err := stmt.ExecContext(ctx, k.Room, k.Member, k.Epoch, k.Sealer, k.Sealed, k.Sig); err != nil {
			return fmt.Errorf("store key of %s for epoch %d: %w", k.Member, k.Epoch, err)
		}
	}
	return nil
}

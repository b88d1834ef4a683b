package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/unibus/unibus/internal/store"
)

const userColumns = `sign_pub, handle, role, status, kem_pub, kem_sig, created_at, updated_at`

// scanUser reads one row of userColumns.
func scanUser(row interface{ Scan(...any) error }) (store.User, error) {
	var u store.User
	var role, status string
	var created, updated int64
	if err := row.Scan(&u.SignPub, &u.Handle, &role, &status, &u.KEMPub, &u.KEMSig, &created, &updated); err != nil {
		return store.User{}, err
	}
	u.Role, u.Status = store.Role(role), store.Status(status)
	u.CreatedAt, u.UpdatedAt = fromDB(created), fromDB(updated)
	return u, nil
}

// AddUser registers u. The sign-pub is checked before the handle: a user
// already registered is ErrAlreadyRegistered whatever handle is asked for.
func (s *Store) AddUser(ctx context.Context, u store.User) error {
	added := store.Change{Kind: store.ChangeUser, User: u.SignPub, UserAdded: true}
	return s.writeReported(ctx, "add user "+u.SignPub, added, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			u.SignPub, u.Handle, string(u.Role), string(u.Status), u.KEMPub, u.KEMSig, toDB(u.CreatedAt), toDB(u.UpdatedAt))
		if !isUnique(err) {
			return err
		}
		// Which constraint? The transaction holds the write lock, so the
		// answer cannot change under us.
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE sign_pub = ?`, u.SignPub).Scan(&one); {
		case err == nil:
			return store.ErrAlreadyRegistered
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		return fmt.Errorf("handle %q: %w", u.Handle, store.ErrHandleTaken)
	})
}

// GetUser returns the user with this sign-pub, or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, signPub string) (store.User, error) {
	u, err := scanUser(s.getUserStmt.QueryRowContext(ctx, signPub))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.User{}, wrap("get user "+signPub, err)
	}
	return u, nil
}

// GetUserByHandle returns the user with this handle, or ErrNotFound.
func (s *Store) GetUserByHandle(ctx context.Context, handle string) (store.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE handle = ?`, handle))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.User{}, wrap(fmt.Sprintf("get user by handle %q", handle), err)
	}
	return u, nil
}

// ListUsers returns every user, revoked ones included, ordered by handle.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY handle`)
	if err != nil {
		return nil, wrap("list users", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap("list users", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list users", err)
	}
	return out, nil
}

// RevokeUser flips the user's status to revoked and returns the record.
// Revoking again keeps the time of the first revocation, and is not a
// change Watch reports.
func (s *Store) RevokeUser(ctx context.Context, signPub string, at time.Time) (store.User, error) {
	var u store.User
	err := s.submit(ctx, "revoke user "+signPub, func(ctx context.Context, tx *sql.Tx) (*store.Change, error) {
		res, err := tx.ExecContext(ctx, `UPDATE users SET status = ?, updated_at = ? WHERE sign_pub = ? AND status <> ?`,
			string(store.StatusRevoked), toDB(at), signPub, string(store.StatusRevoked))
		if err != nil {
			return nil, err
		}
		flipped, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE sign_pub = ?`, signPub))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, store.ErrNotFound
		}
		if err != nil || flipped == 0 {
			return nil, err
		}
		return &store.Change{Kind: store.ChangeUser, User: signPub, StatusChanged: true}, nil
	})
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// SetKEMKey stores the user's KEM public key and its binding signature.
func (s *Store) SetKEMKey(ctx context.Context, signPub string, kemPub, sig []byte, at time.Time) error {
	changed := store.Change{Kind: store.ChangeUser, User: signPub, KEMKeyChanged: true}
	return s.writeReported(ctx, "set kem key of "+signPub, changed, func(ctx context.Context, tx *sql.Tx) error {
		return changedOne(tx.ExecContext(ctx, `UPDATE users SET kem_pub = ?, kem_sig = ?, updated_at = ? WHERE sign_pub = ?`,
			kemPub, sig, toDB(at), signPub))(store.ErrNotFound)
	})
}

// CountActiveAdmins counts users with role admin and status active.
func (s *Store) CountActiveAdmins(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE role = ? AND status = ?`,
		string(store.RoleAdmin), string(store.StatusActive)).Scan(&n)
	if err != nil {
		return 0, wrap("count active admins", err)
	}
	return n, nil
}

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

// AppendAudit implements store.AuditLog: it reads the newest entry and
// inserts the next one in one write transaction, so appends from this
// process and from an admin CLI on the same file are serialized.
func (s *Store) AppendAudit(ctx context.Context, r audit.Record) (audit.Entry, error) {
	var e audit.Entry
	err := s.write(ctx, "append audit entry", func(ctx context.Context, tx *sql.Tx) error {
		var prev *audit.Entry
		var raw []byte
		err := tx.QueryRowContext(ctx, "SELECT entry FROM audit ORDER BY seq DESC LIMIT 1").Scan(&raw)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			p, err := audit.Unmarshal(raw)
			if err != nil {
				// The newest entry does not parse: appending after it would
				// hide the damage. Refuse, so an operator looks.
				return fmt.Errorf("%w: the newest audit entry is corrupt (run membershipd audit verify): %w", store.ErrUnavailable, err)
			}
			prev = &p
		}
		if e, err = audit.Next(prev, r); err != nil {
			return err
		}
		b, err := audit.Marshal(e)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO audit (seq, entry) VALUES (?, ?)", int64(e.Seq), b)
		return err
	})
	if err != nil {
		return audit.Entry{}, failClosed(err)
	}
	return e, nil
}

// AuditEntries implements store.AuditLog. A row that does not parse is
// returned as an error naming its seq.
func (s *Store) AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, "SELECT seq, entry FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", int64(min(after, 1<<62)), limit)
	if err != nil {
		return nil, wrap("list audit entries", err)
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var seq int64
		var raw []byte
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, wrap("list audit entries", err)
		}
		e, err := audit.Unmarshal(raw)
		if err != nil {
			return nil, fmt.Errorf("audit entry at row %d: %w", seq, err)
		}
		if e.Seq != uint64(seq) {
			return nil, fmt.Errorf("audit row %d holds entry seq %d: %w", seq, e.Seq, audit.ErrBroken)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list audit entries", err)
	}
	return out, nil
}

// failClosed marks every append failure as unavailability: a caller that
// cannot audit a change must not make it.
func failClosed(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/unibus/unibus/internal/store"
)

var _ store.Ledger = (*Store)(nil)

// AddUsage implements store.Ledger: one upsert and the deletion of the
// user's lapsed days, in one write.
func (s *Store) AddUsage(ctx context.Context, user string, kind store.UsageKind, n int64, until, now time.Time) error {
	if n < 0 {
		return fmt.Errorf("add usage: negative byte count %d", n)
	}
	day := store.UsageDay(until)
	today := now.Unix() / 86400
	return s.write(ctx, "add usage of "+user, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO usage (sign_pub, kind, day, bytes) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (sign_pub, kind, day) DO UPDATE SET bytes = bytes + excluded.bytes`, user, string(kind), day, n); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM usage WHERE sign_pub = ?1 AND kind = ?2 AND day != 0 AND day <= ?3`, user, string(kind), today)
		return err
	})
}

// Usage implements store.Ledger.
func (s *Store) Usage(ctx context.Context, user string, kind store.UsageKind, now time.Time) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes), 0) FROM usage
		WHERE sign_pub = ?1 AND kind = ?2 AND (day = 0 OR day > ?3)`, user, string(kind), now.Unix()/86400).Scan(&n)
	if err != nil {
		return 0, unavailableError("read usage of "+user, err)
	}
	return n, nil
}

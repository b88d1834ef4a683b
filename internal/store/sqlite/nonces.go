package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// useNonce records a pair, or re-records it if its earlier record has
// expired. One statement, inside the write's savepoint: of two uses of a
// live pair exactly one changes a row, whether they are in one batch or
// in two.
const useNonce = `INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?1, ?2, ?3)
	ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
	WHERE nonces.expires_at <= ?4`

// UseNonce records (keyID, nonce) until expires, or returns ErrReplay if
// the pair is recorded and has not expired at now. A record whose expiry is
// at or before now has expired. Every SweepEvery calls it also deletes the
// expired records of every pair; a failed sweep is logged, not returned,
// since the nonce itself was recorded.
func (s *Store) UseNonce(ctx context.Context, keyID, nonce string, now, expires time.Time) error {
	err := s.write(ctx, "use nonce of "+keyID, func(ctx context.Context, tx *sql.Tx) error {
		return changedOne(tx.StmtContext(ctx, s.useNonceStmt).ExecContext(ctx, keyID, nonce, toDB(expires), toDB(now)))(store.ErrReplay)
	})
	if err != nil {
		return err
	}
	if s.uses.Add(1)%s.sweepEvery == 0 {
		if _, err := s.Sweep(ctx, now); err != nil {
			s.log.Warn("nonce sweep failed; it will be retried", "err", err)
		}
	}
	return nil
}

// Sweep deletes the nonce records that have expired at now and returns how
// many it deleted. UseNonce calls it periodically; a daemon may also call
// it on a timer.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, "sweep expired nonces", func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM nonces WHERE expires_at <= ?`, toDB(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// DeploymentID returns the id in the deployment table's one row, making
// it first if the row is absent: the insert and the read that follows it
// are one write transaction, so of concurrent first calls (from any
// process on the file) one inserts and every one reads its id. It is not
// a change Watch reports.
func (s *Store) DeploymentID(ctx context.Context) (string, error) {
	const op = "deployment id"
	var id string
	err := s.r.QueryRowContext(ctx, `SELECT id FROM deployment WHERE singleton = 1`).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err := s.write(ctx, op, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO deployment (singleton, id, created_at) VALUES (1, ?, ?) ON CONFLICT DO NOTHING`,
				store.NewDeploymentID(), toDB(time.Now())); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, `SELECT id FROM deployment WHERE singleton = 1`).Scan(&id)
		})
		if err != nil {
			return "", err
		}
	case err != nil:
		return "", wrap(op, err)
	}
	if !store.ValidDeploymentID(id) {
		return "", fmt.Errorf("%s: stored id %q is malformed: %w", op, id, store.ErrUnavailable)
	}
	return id, nil
}

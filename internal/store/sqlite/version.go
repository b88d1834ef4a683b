package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// changeVersion serves ChangeVersion: SQLite's PRAGMA data_version on a
// connection of its own that never writes. data_version changes when any
// other connection commits to the file: this store's writer, or another
// process such as 'membershipd user revoke --db'. A new connection starts
// data_version afresh, so the version the store hands out is its own
// counter, advanced whenever data_version differs from the last reading
// and whenever the connection is replaced; it never repeats.
type changeVersion struct {
	mu      sync.Mutex
	db      *sql.DB
	conn    *sql.Conn // nil until first use and after an error
	last    int64
	version uint64
}

// ChangeVersion implements store.Store: a number, never 0, that is the
// same at two calls only if nothing was committed to the database in
// between, by this process or any other, so that another process's commit
// is seen at once rather than at Watch's next poll. The login path uses it
// to serve a cached grant without reading the user again. It costs one
// PRAGMA on a dedicated connection, under a mutex held for that query
// only. Any error is returned, and the caller must then read the store.
func (s *Store) ChangeVersion(ctx context.Context) (uint64, error) {
	v := &s.cv
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil {
		c, err := v.db.Conn(ctx)
		if err != nil {
			return 0, fmt.Errorf("change version: %w", err)
		}
		v.conn = c
		v.version++ // a new connection's data_version means nothing against the old one's
		v.last = -1
	}
	var dv int64
	if err := v.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&dv); err != nil {
		v.conn.Close()
		v.conn = nil
		return 0, fmt.Errorf("change version: %w", err)
	}
	if dv != v.last {
		if v.last != -1 {
			v.version++
		}
		v.last = dv
	}
	return v.version, nil
}

func (v *changeVersion) close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil {
		return nil
	}
	err := v.conn.Close()
	v.conn = nil
	return err
}

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema's versions: migrations[i] takes the database
// from user_version i to i+1. Append only; never edit a released entry.
//
// Times are INTEGER microseconds since the Unix epoch (UTC); durations are
// INTEGER nanoseconds. Users are never deleted. Members are deleted on
// removal; the history stays in epochs and sealed_keys.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE users (
	sign_pub   TEXT PRIMARY KEY,
	handle     TEXT NOT NULL UNIQUE,
	role       TEXT NOT NULL,
	status     TEXT NOT NULL,
	kem_pub    BLOB,
	kem_sig    BLOB,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE rooms (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL,
	created_by       TEXT NOT NULL,
	created_at       INTEGER NOT NULL,
	epoch            INTEGER NOT NULL CHECK (epoch >= 1),
	rotation_pending INTEGER NOT NULL CHECK (rotation_pending IN (0, 1)),
	max_age          INTEGER NOT NULL,
	max_bytes        INTEGER NOT NULL
) STRICT;

CREATE TABLE members (
	room     TEXT NOT NULL REFERENCES rooms (id),
	sign_pub TEXT NOT NULL REFERENCES users (sign_pub),
	role     TEXT NOT NULL,
	added_by TEXT NOT NULL,
	added_at INTEGER NOT NULL,
	PRIMARY KEY (room, sign_pub)
) STRICT, WITHOUT ROWID;

CREATE INDEX members_by_user ON members (sign_pub, room);

CREATE TABLE epochs (
	room       TEXT NOT NULL REFERENCES rooms (id),
	epoch      INTEGER NOT NULL CHECK (epoch >= 1),
	created_by TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (room, epoch)
) STRICT, WITHOUT ROWID;

CREATE TABLE sealed_keys (
	room   TEXT NOT NULL,
	member TEXT NOT NULL REFERENCES users (sign_pub),
	epoch  INTEGER NOT NULL,
	sealer TEXT NOT NULL,
	sealed BLOB NOT NULL,
	sig    BLOB NOT NULL,
	PRIMARY KEY (room, member, epoch),
	FOREIGN KEY (room, epoch) REFERENCES epochs (room, epoch)
) STRICT, WITHOUT ROWID;

CREATE TABLE nonces (
	key_id     TEXT NOT NULL,
	nonce      TEXT NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (key_id, nonce)
) STRICT, WITHOUT ROWID;

CREATE INDEX nonces_by_expiry ON nonces (expires_at);
`,
	// 2: the audit log. Rows are the entries' encoded bytes, append-only:
	// the triggers refuse updates and deletes from any connection.
	`
CREATE TABLE audit (
	seq   INTEGER PRIMARY KEY CHECK (seq >= 1),
	entry BLOB NOT NULL
) STRICT;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
`,
	// 3: protocol 2's shared stream. A room stored before it has a stream
	// of its own, so existing rows read as 0.
	`
ALTER TABLE rooms ADD COLUMN shared INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1));
`,
	// 4: the deployment id, one row made the first time it is asked for.
	`
CREATE TABLE deployment (
	singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
	id         TEXT NOT NULL CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	created_at INTEGER NOT NULL
) STRICT;
`,
	// 5: the usage ledger of the per-user quotas (store.Ledger): bytes per
	// user, kind and day they lapse (0: never).
	`
CREATE TABLE usage (
	sign_pub TEXT NOT NULL,
	kind     TEXT NOT NULL,
	day      INTEGER NOT NULL CHECK (day >= 0),
	bytes    INTEGER NOT NULL CHECK (bytes >= 0),
	PRIMARY KEY (sign_pub, kind, day)
) STRICT, WITHOUT ROWID;
`,
}

// migrate brings the schema to SchemaVersion in one transaction, and
// refuses a database from a newer unibus.
func (s *Store) migrate(ctx context.Context) error {
	return s.write(ctx, "migrate schema", func(ctx context.Context, tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return fmt.Errorf("read user_version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this unibus supports (%d): upgrade unibus, or restore a backup made by this version", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
		if v == len(migrations) {
			return nil
		}
		// PRAGMA takes no parameters; the value is our own integer.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
			return fmt.Errorf("set user_version: %w", err)
		}
		s.log.Info("database schema migrated", "from", v, "to", len(migrations))
		return nil
	})
}

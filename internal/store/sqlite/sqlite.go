// Package sqlite is the single-node store.Store: one SQLite file, opened
// with the pure-Go modernc.org/sqlite driver so that CGO_ENABLED=0 builds
// work.
//
// Durability comes before acknowledgement (docs/DESIGN.md): the database runs in
// WAL mode with synchronous=FULL, so a write has reached the disk when its
// method returns. Every check-then-write rule of store.Store (a rotation
// covers every member, a nonce is used once) runs inside a write
// transaction; all writes go through a single connection that begins its
// transactions with BEGIN IMMEDIATE, so they are serialized within the
// process and, through SQLite's file lock, against any other process (an
// admin CLI) that opens the same file. Writes that arrive while a commit
// is in progress are committed together by the next transaction, each in
// a savepoint of its own, so that they share one fsync (group commit,
// commit.go). Reads use a separate pool of read-only connections and see
// the last committed state.
//
// Open returns only an open store: there is no "not open yet" state here.
// Watch reports this store's own writes before they return, and finds
// other processes' commits by polling (watch.go); ChangeVersion sees them
// at once (version.go).
//
// This package is not the place for authorization or input validation; the
// API checks who may do what before it calls the store.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/unibus/unibus/internal/store"
)

// BusyTimeout is how long a write waits for another process's write lock
// on the database file before it fails with store.ErrUnavailable.
const BusyTimeout = 5 * time.Second

// SweepEvery is how many UseNonce calls pass between two sweeps of expired
// nonces, so that the nonce table stays bounded by the request rate times
// the nonce lifetime.
const SweepEvery = 1024

// Store is a store.Store in one SQLite file. It is safe for concurrent use.
type Store struct {
	w   *sql.DB // one connection; every write and every check-then-write
	r   *sql.DB // read-only pool
	log *slog.Logger

	sweepEvery uint64
	uses       atomic.Uint64 // UseNonce calls, for the periodic sweep

	// Prepared once: the statements every signed request and every login
	// run (parsing them each time was 7% of a data-plane login), and the
	// per-epoch lookups clients make.
	getUserStmt, roomIDsStmt, useNonceStmt *sql.Stmt
	sealedKeyStmt, epochStmt               *sql.Stmt

	commit committer     // runs every write, in batches (commit.go)
	cv     changeVersion // ChangeVersion's connection, on r
	watch  watchers      // Watch's callbacks and poller (watch.go)
}

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*Store)

// WithLogger sets the logger for events an operator should see (a file
// mode tightened, a schema migrated, a failed nonce sweep). The default
// discards them.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A missing parent directory is created 0700; the file
// is created 0600, and an existing file (or WAL) with any other mode is
// set to 0600 with a warning. A database written by a newer unibus, whose
// schema this one does not know, is refused.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	s := &Store{log: slog.New(slog.DiscardHandler), sweepEvery: SweepEvery}
	s.watch.poll = DefaultWatchPoll
	for _, o := range opts {
		o(s)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if err := s.prepareFile(abs); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	if err := s.open(ctx, abs); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	return s, nil
}

// prepareFile creates the directory and the file with private modes before
// SQLite sees them (SQLite gives its -wal and -shm files the mode of the
// database file).
func (s *Store) prepareFile(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	// The WAL holds recent writes in full: it gets the same treatment.
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm() == 0o600 {
			continue
		}
		s.log.Warn("database file had a mode other than 0600; setting it to 0600",
			"path", p, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(p, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// dsn builds the driver name for path. The path goes in a file: URI,
// escaped, so that '?' or '#' in it cannot be read as parameters.
func dsn(path string, params ...string) string {
	q := url.Values{}
	for _, p := range params {
		q.Add("_pragma", p)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (s *Store) open(ctx context.Context, path string) error {
	busy := fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds())
	var err error
	// The write connection sets WAL (persistent, in the file) before any
	// reader connects. _txlock=immediate makes BeginTx run BEGIN IMMEDIATE,
	// taking the write lock before the first read of a transaction.
	s.w, err = sql.Open("sqlite", dsn(path, busy, "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)")+"&_txlock=immediate")
	if err != nil {
		return err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	s.w.SetConnMaxLifetime(0)
	if err := s.checkPragmas(ctx); err != nil {
		if corrupt(err) {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return err
	}
	if err := s.quickCheck(ctx); err != nil {
		return err
	}
	s.startCommitter()
	if err := s.migrate(ctx); err != nil {
		return err
	}
	s.r, err = sql.Open("sqlite", dsn(path, busy, "synchronous(FULL)", "foreign_keys(1)", "query_only(1)"))
	if err != nil {
		return err
	}
	s.r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)) + 1) // + ChangeVersion's
	s.cv.db = s.r
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("open read connection: %w", err)
	}
	for _, p := range []struct {
		db   *sql.DB
		q    string
		stmt **sql.Stmt
	}{
		{s.r, `SELECT ` + userColumns + ` FROM users WHERE sign_pub = ?`, &s.getUserStmt},
		{s.r, `SELECT room FROM members WHERE sign_pub = ? ORDER BY room`, &s.roomIDsStmt},
		{s.w, useNonce, &s.useNonceStmt},
		{s.r, sealedKeyQuery, &s.sealedKeyStmt},
		{s.r, epochQuery, &s.epochStmt},
	} {
		if *p.stmt, err = p.db.PrepareContext(ctx, p.q); err != nil {
			return fmt.Errorf("prepare statement: %w", err)
		}
	}
	return nil
}

// ErrCorrupt is a database file that fails SQLite's integrity check at
// open: the store refuses to open it rather than serve some rooms and
// users as missing.
var ErrCorrupt = errors.New("the database file is corrupt; restore it from a backup (docs/OPERATIONS.md, \"Backups and integrity\")")

// quickCheck runs PRAGMA quick_check (the b-trees, their pages and their
// records; not the indexes' contents, which integrity_check also reads)
// and fails with ErrCorrupt when it finds a problem. It reads the whole
// file once: about a second per gigabyte.
func (s *Store) quickCheck(ctx context.Context) error {
	rows, err := s.w.QueryContext(ctx, "PRAGMA quick_check(5)")
	if err != nil {
		if corrupt(err) {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return fmt.Errorf("integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	line0 := ""
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		if line0 == "" {
			line0 = line
		}
		for _, l := range strings.Split(line, "\n") {
			if l != "ok" && l != "" && !strings.HasPrefix(l, "*** ") {
				problems = append(problems, l)
			}
		}
	}
	if err := rows.Err(); err != nil {
		if corrupt(err) {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return fmt.Errorf("integrity check: %w", err)
	}
	if len(problems) > 0 || line0 != "ok" {
		return fmt.Errorf("%w: quick_check: %s", ErrCorrupt, strings.Join(problems, "; "))
	}
	return nil
}

// corrupt reports whether err is SQLite finding the file corrupt or not a
// database at all.
func corrupt(err error) bool {
	switch code(err) & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}

// checkPragmas verifies that the settings durability depends on are in
// force: a file system that cannot do WAL (some network file systems)
// fails here rather than silently running with weaker guarantees.
func (s *Store) checkPragmas(ctx context.Context) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, not wal: the file system may not support WAL; put the database on a local disk", mode)
	}
	var sync, fk int
	if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return fmt.Errorf("read foreign_keys: %w", err)
	}
	if sync != 2 || fk != 1 {
		return fmt.Errorf("synchronous=%d foreign_keys=%d, want 2 (FULL) and 1", sync, fk)
	}
	return nil
}

// Close stops the watch poller, fails the writes still queued, waits for
// the batch being committed and closes the database. Methods called after
// Close fail.
func (s *Store) Close() error {
	s.watch.stopWatch()
	s.stopCommitter()
	errs := []error{s.cv.close()}
	for _, st := range []*sql.Stmt{s.getUserStmt, s.roomIDsStmt, s.useNonceStmt, s.sealedKeyStmt, s.epochStmt} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// changedOne takes a statement's result and returns what the statement
// means: its error, or none when it changed a row, or the error given
// when it changed none (a replay, a missing user, not a member):
//
//	return changedOne(tx.ExecContext(ctx, q, args...))(store.ErrNotFound)
func changedOne(res sql.Result, err error) func(none error) error {
	return func(none error) error {
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return none
		}
		return nil
	}
}

// wrap prefixes err with the operation and marks the failures of the
// database itself (locked, I/O, disk full, closed) as store.ErrUnavailable,
// which callers treat as a denial.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, sql.ErrConnDone) {
		return true
	}
	switch err.Error() { // database/sql has no sentinels for these
	case "sql: database is closed", "sql: statement is closed":
		return true
	}
	switch code(err) & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}

// code returns the SQLite extended result code of err, or 0.
func code(err error) int {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isUnique reports whether err is a primary-key or unique violation.
func isUnique(err error) bool {
	c := code(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// Times are stored as INTEGER microseconds since the Unix epoch, which
// keeps instants comparable in SQL whatever zone a caller used.
func toDB(t time.Time) int64 { return t.UnixMicro() }

func fromDB(us int64) time.Time { return time.UnixMicro(us).UTC() }

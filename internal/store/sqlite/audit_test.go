package sqlite

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

func appendN(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		_, err := s.AppendAudit(t.Context(), audit.Record{Time: time.Unix(int64(1e9+i), 0), Actor: audit.ActorLocal, Via: audit.ViaCLI,
			Action: audit.ActionUserAdd, Subject: strings.Repeat("ab", 32), Detail: "handle=x"})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// rawDB opens the file as another process would, without our triggers'
// cooperation (they are in the file, so they still fire).
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestAuditRowsCannotBeChangedInSQL: the table refuses UPDATE and DELETE
// from any connection, ours or another process's.
func TestAuditRowsCannotBeChangedInSQL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s := openTest(t, path)
	appendN(t, s, 3)
	db := rawDB(t, path)
	for _, q := range []string{
		"UPDATE audit SET entry = X'00' WHERE seq = 2",
		"DELETE FROM audit WHERE seq = 3",
		"DELETE FROM audit",
	} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v", q, err)
		}
	}
	es, err := s.AuditEntries(t.Context(), 0, 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("entries after refused edits: %d, %v", len(es), err)
	}
	if _, err := audit.Verify(audit.Head{}, es); err != nil {
		t.Fatal(err)
	}
}

// TestAuditTamperingDetectedAndAppendRefused: someone who drops the
// triggers and edits a row is caught by Verify; a corrupt newest entry
// makes every further append fail closed (no change can then be made
// through an audited path until an operator looks).
func TestAuditTamperingDetectedAndAppendRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s := openTest(t, path)
	appendN(t, s, 3)
	db := rawDB(t, path)
	for _, q := range []string{
		"DROP TRIGGER audit_no_update",
		`UPDATE audit SET entry = CAST(replace(CAST(entry AS TEXT), 'handle=x', 'handle=y') AS BLOB) WHERE seq = 2`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	es, err := s.AuditEntries(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(audit.Head{}, es); !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "seq 2") {
		t.Fatalf("edit of entry 2 not detected: %v", err)
	}

	if _, err := db.Exec(`UPDATE audit SET entry = X'7b' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	_, err = s.AppendAudit(t.Context(), audit.Record{Time: time.Now(), Actor: audit.ActorLocal, Via: audit.ViaCLI, Action: audit.ActionUserRevoke})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append after a corrupt head: %v", err)
	}
	if _, err := s.AuditEntries(t.Context(), 0, 10); !errors.Is(err, audit.ErrInvalid) || !strings.Contains(err.Error(), "row 3") {
		t.Fatalf("reading a corrupt row: %v", err)
	}
}

// TestAuditSurvivesReopen: the chain continues across restarts.
func TestAuditSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 2)
	s.Close()
	s = openTest(t, path)
	appendN(t, s, 2)
	es, err := s.AuditEntries(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := audit.Verify(audit.Head{}, es); err != nil || h.Seq != 4 {
		t.Fatalf("%+v %v", h, err)
	}
}

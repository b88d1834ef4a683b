package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

// memLog is an AuditLog in memory, counting reads.
type memLog struct {
	entries []audit.Entry
	reads   int
}

func (l *memLog) AppendAudit(_ context.Context, r audit.Record) (audit.Entry, error) {
	var prev *audit.Entry
	if n := len(l.entries); n > 0 {
		prev = &l.entries[n-1]
	}
	e, err := audit.Next(prev, r)
	if err != nil {
		return audit.Entry{}, err
	}
	l.entries = append(l.entries, e)
	return e, nil
}

func (l *memLog) AuditEntries(_ context.Context, after uint64, limit int) ([]audit.Entry, error) {
	l.reads++
	var out []audit.Entry
	for _, e := range l.entries {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// newLog appends n entries.
func newLog(t *testing.T, n int) *memLog {
	t.Helper()
	l := &memLog{}
	t0 := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	for i := range n {
		r := audit.Record{Time: t0.Add(time.Duration(i) * time.Second), Actor: audit.ActorLocal, Via: audit.ViaCLI,
			Action: audit.ActionUserAdd, Subject: fmt.Sprintf("%064x", i)}
		if _, err := l.AppendAudit(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// ListAudit reads across page boundaries, from any seq, up to a limit.
func TestListAudit(t *testing.T) {
	n := 2*store.AuditPage + 3
	l := newLog(t, n)
	for _, tc := range []struct {
		after      uint64
		limit      int
		first, len int
	}{
		{0, 0, 1, n},
		{0, 1, 1, 1},
		{0, store.AuditPage, 1, store.AuditPage},
		{0, store.AuditPage + 1, 1, store.AuditPage + 1},
		{store.AuditPage - 1, 2, store.AuditPage, 2},
		{uint64(n - 1), 0, n, 1},
		{uint64(n), 0, 0, 0},
	} {
		es, err := store.ListAudit(t.Context(), l, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != tc.len || len(es) > 0 && es[0].Seq != uint64(tc.first) {
			t.Errorf("after %d limit %d: %d entries from %v, want %d from %d", tc.after, tc.limit, len(es), es[:min(1, len(es))], tc.len, tc.first)
		}
		for i := 1; i < len(es); i++ {
			if es[i].Seq != es[i-1].Seq+1 {
				t.Fatalf("after %d: seq %d follows %d", tc.after, es[i].Seq, es[i-1].Seq)
			}
		}
	}
}

// VerifyAudit walks every page, returns the head, finds a recorded head,
// and reports the last entry that holds when one was edited.
func TestVerifyAudit(t *testing.T) {
	n := store.AuditPage + 7
	l := newLog(t, n)
	last := l.entries[n-1]
	mid := l.entries[store.AuditPage+1]
	head, found, err := store.VerifyAudit(t.Context(), l, &audit.Head{Seq: mid.Seq, Hash: mid.Hash})
	if err != nil || !found || head != (audit.Head{Seq: last.Seq, Hash: last.Hash}) {
		t.Fatalf("intact log: head %+v found %v err %v", head, found, err)
	}
	if _, found, _ := store.VerifyAudit(t.Context(), l, &audit.Head{Seq: mid.Seq, Hash: last.Hash}); found {
		t.Error("a head that is not in the log was found")
	}
	if head, _, err := store.VerifyAudit(t.Context(), &memLog{}, nil); err != nil || head != (audit.Head{}) {
		t.Errorf("empty log: %+v %v", head, err)
	}

	l.entries[store.AuditPage+2].Detail = "edited"
	head, _, err = store.VerifyAudit(t.Context(), l, nil)
	if !errors.Is(err, audit.ErrBroken) || head.Seq != store.AuditPage+2 {
		t.Fatalf("edited entry %d: head %+v err %v, want ErrBroken after seq %d", store.AuditPage+3, head, err, store.AuditPage+2)
	}
}

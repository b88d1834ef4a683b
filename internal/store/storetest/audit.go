package storetest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

var auditTests = []test{
	{"AuditAppendChains", testAuditAppendChains},
	{"AuditEntriesPages", testAuditEntriesPages},
	{"AuditAppendConcurrent", testAuditAppendConcurrent},
	{"AuditRejectsIncompleteRecord", testAuditRejectsIncomplete},
	{"AuditedFailureIsRecorded", testAuditedFailureIsRecorded},
}

func auditRecord(i int) audit.Record {
	return audit.Record{Time: at(i), Actor: signPub("admin"), Via: audit.ViaAPI, Action: audit.ActionUserAdd,
		Subject: signPub(fmt.Sprintf("user%d", i)), Detail: fmt.Sprintf("handle=user%d role=member", i), Request: nonce(fmt.Sprint(i)) + nonce(fmt.Sprint(-i))}
}

func (f *fixture) auditAll() []audit.Entry {
	f.t.Helper()
	es, err := f.s.AuditEntries(f.ctx, 0, 1<<20)
	if err != nil {
		f.t.Fatalf("AuditEntries: %v", err)
	}
	return es
}

func testAuditAppendChains(f *fixture) {
	if es := f.auditAll(); len(es) != 0 {
		f.t.Fatalf("a new store has %d audit entries", len(es))
	}
	var appended []audit.Entry
	for i := 1; i <= 5; i++ {
		e, err := f.s.AppendAudit(f.ctx, auditRecord(i))
		if err != nil {
			f.t.Fatalf("AppendAudit %d: %v", i, err)
		}
		if e.Seq != uint64(i) {
			f.t.Fatalf("entry %d got seq %d", i, e.Seq)
		}
		appended = append(appended, e)
	}
	got := f.auditAll()
	if len(got) != 5 {
		f.t.Fatalf("%d entries stored, want 5", len(got))
	}
	for i := range got {
		if !got[i].Time.Equal(appended[i].Time) || got[i].Hash != appended[i].Hash || got[i].Record.Detail != appended[i].Record.Detail {
			f.t.Fatalf("entry %d stored as %+v, appended %+v", i+1, got[i], appended[i])
		}
	}
	h, err := audit.Verify(audit.Head{}, got)
	if err != nil {
		f.t.Fatalf("stored chain does not verify: %v", err)
	}
	if h.Seq != 5 || h.Hash != appended[4].Hash {
		f.t.Fatalf("head %+v", h)
	}
}

func testAuditEntriesPages(f *fixture) {
	for i := 1; i <= 7; i++ {
		if _, err := f.s.AppendAudit(f.ctx, auditRecord(i)); err != nil {
			f.t.Fatal(err)
		}
	}
	var seqs []uint64
	for after := uint64(0); ; {
		page, err := f.s.AuditEntries(f.ctx, after, 3)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(page) > 3 {
			f.t.Fatalf("page of %d entries, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seqs = append(seqs, e.Seq)
		}
		after = page[len(page)-1].Seq
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7]" {
		f.t.Fatalf("paged seqs %v", seqs)
	}
	if es, err := f.s.AuditEntries(f.ctx, 7, 10); err != nil || len(es) != 0 {
		f.t.Fatalf("after the head: %v, %v", es, err)
	}
	if es, err := f.s.AuditEntries(f.ctx, 0, 0); err != nil || len(es) != 0 {
		f.t.Fatalf("limit 0: %v, %v", es, err)
	}
}

// testAuditAppendConcurrent: appends that race each other still form one
// chain with every seq used exactly once.
func testAuditAppendConcurrent(f *fixture) {
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		wg.Go(func() {
			if _, err := f.s.AppendAudit(f.ctx, auditRecord(i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		f.t.Fatalf("concurrent AppendAudit: %v", err)
	}
	es := f.auditAll()
	if len(es) != n {
		f.t.Fatalf("%d entries, want %d", len(es), n)
	}
	if _, err := audit.Verify(audit.Head{}, es); err != nil {
		f.t.Fatalf("concurrent appends broke the chain: %v", err)
	}
	seen := map[string]bool{}
	for _, e := range es {
		if seen[e.Subject] {
			f.t.Fatalf("record for %s appended twice", e.Subject[:8])
		}
		seen[e.Subject] = true
	}
}

func testAuditRejectsIncomplete(f *fixture) {
	r := auditRecord(1)
	r.Actor = ""
	if _, err := f.s.AppendAudit(f.ctx, r); err == nil {
		f.t.Fatal("an entry without an actor was appended")
	}
	if es := f.auditAll(); len(es) != 0 {
		f.t.Fatalf("a refused append left %d entries", len(es))
	}
}

// testAuditedFailureIsRecorded: store.Audited writes the entry before the
// change and a "failed" entry when the store refuses it.
func testAuditedFailureIsRecorded(f *fixture) {
	admin := f.addUser("admin", store.RoleAdmin)
	rec := auditRecord(1)
	now := func() time.Time { return at(3) }
	u := store.User{SignPub: admin.SignPub, Handle: "again", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: at(3), UpdatedAt: at(3)}
	res, err := store.Audited(f.ctx, f.s, rec, now, func() error { return f.s.AddUser(f.ctx, u) })
	if !errors.Is(err, store.ErrAlreadyRegistered) {
		f.t.Fatalf("Audited returned %v, want the change's own error", err)
	}
	if res.Appended != 2 || res.FailRecordErr != nil {
		f.t.Fatalf("result %+v", res)
	}
	es := f.auditAll()
	if len(es) != 2 || es[0].Action != audit.ActionUserAdd || es[1].Action != audit.ActionFailed || es[1].Refers != es[0].Seq {
		f.t.Fatalf("entries %+v", es)
	}
	if _, err := audit.Verify(audit.Head{}, es); err != nil {
		f.t.Fatal(err)
	}
	res, err = store.Audited(f.ctx, f.s, auditRecord(2), now, func() error { return nil })
	if err != nil || res.Appended != 1 {
		f.t.Fatalf("a change that applies: %+v, %v", res, err)
	}
}

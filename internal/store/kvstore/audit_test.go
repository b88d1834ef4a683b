package kvstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
)

func auditRec(i int) audit.Record {
	return audit.Record{Time: time.Unix(int64(1e9+i), 0), Actor: strings.Repeat("ab", 32), Via: audit.ViaAPI,
		Action: audit.ActionMemberAdd, Room: strings.Repeat("cd", 16), Subject: fmt.Sprintf("%064x", i)}
}

// TestAuditStreamRefusesDeletes: the audit stream denies message deletes
// and purges, and JetStream refuses to turn that off, even for the
// internal identity that owns the control account.
func TestAuditStreamRefusesDeletes(t *testing.T) {
	s, n := openStore(t)
	for i := range 3 {
		if _, err := s.AppendAudit(t.Context(), auditRec(i)); err != nil {
			t.Fatal(err)
		}
	}
	js, err := jetstream.New(n.Control(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), kvstore.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(t.Context(), 2); err == nil {
		t.Error("an audit entry was deleted")
	}
	if err := st.SecureDeleteMsg(t.Context(), 2); err == nil {
		t.Error("an audit entry was erased")
	}
	if err := st.Purge(t.Context()); err == nil {
		t.Error("the audit stream was purged")
	}
	cfg := st.CachedInfo().Config
	cfg.DenyDelete, cfg.DenyPurge = false, false
	if _, err := js.UpdateStream(t.Context(), cfg); err == nil {
		t.Error("deletes were re-enabled on the audit stream")
	}
	if err := js.DeleteStream(t.Context(), kvstore.AuditStream); err == nil {
		t.Error("the audit stream was deleted")
	}
	es, err := s.AuditEntries(t.Context(), 0, 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("after the attempts: %d entries, %v", len(es), err)
	}
	if _, err := audit.Verify(audit.Head{}, es); err != nil {
		t.Fatal(err)
	}
}

// TestAuditForgedEntryDetected: a publish that bypasses AppendAudit (a
// forged entry from a holder of the internal identity) breaks the chain
// where it lands, and the next append refuses to chain after it.
func TestAuditForgedEntryDetected(t *testing.T) {
	s, n := openStore(t)
	if _, err := s.AppendAudit(t.Context(), auditRec(1)); err != nil {
		t.Fatal(err)
	}
	forged, err := audit.Next(nil, auditRec(99)) // claims to be the first entry
	if err != nil {
		t.Fatal(err)
	}
	b, _ := audit.Marshal(forged)
	if err := n.Control(t).Publish(kvstore.AuditSubject, b); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool {
		_, err = s.AuditEntries(t.Context(), 0, 10)
		return err != nil
	}, "forged entry detected (the audit entries kept being read)")
	if !errors.Is(err, audit.ErrBroken) {
		t.Fatalf("forged entry detected as %v, want audit.ErrBroken", err)
	}
	if _, err := s.AppendAudit(t.Context(), auditRec(2)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append after a forged head: %v", err)
	}
}

// TestAuditAppendsFromTwoConnections: two stores on separate connections
// (two nodes' worth of writers, or a node and an admin CLI) append in a
// race and still form one chain.
func TestAuditAppendsFromTwoConnections(t *testing.T) {
	s1, n := openStore(t)
	s2, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	const per = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for i, s := range []*kvstore.Store{s1, s2} {
		for j := range per {
			wg.Go(func() {
				if _, err := s.AppendAudit(t.Context(), auditRec(i*per+j)); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	es, err := s1.AuditEntries(t.Context(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := audit.Verify(audit.Head{}, es); err != nil || h.Seq != 2*per {
		t.Fatalf("head %+v, %v", h, err)
	}
}

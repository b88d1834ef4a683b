package storetest

import (
	"sync"
	"time"

	"github.com/unibus/unibus/internal/store"
)

var usageTests = []test{
	{"Usage", testUsage},
	{"UsageConcurrent", testUsageConcurrent},
}

// ledger returns the store's usage ledger; every backend keeps one.
func (f *fixture) ledger(s store.Store) store.Ledger {
	f.t.Helper()
	l, ok := s.(store.Ledger)
	if !ok {
		f.t.Fatalf("%T keeps no usage ledger (store.Ledger)", s)
	}
	return l
}

func (f *fixture) usage(l store.Ledger, user string, kind store.UsageKind, now time.Time) int64 {
	f.t.Helper()
	n, err := l.Usage(f.ctx, user, kind, now)
	if err != nil {
		f.t.Fatalf("Usage(%s, %s): %v", user[:8], kind, err)
	}
	return n
}

func testUsage(f *fixture) {
	l := f.ledger(f.s)
	alice, bob := signPub("alice"), signPub("bob")
	now := at(0)
	if n := f.usage(l, alice, store.UsageMsgBytes, now); n != 0 {
		f.t.Fatalf("a user with no ledger uses %d bytes, want 0", n)
	}
	add := func(user string, kind store.UsageKind, n int64, until time.Time) {
		f.t.Helper()
		if err := l.AddUsage(f.ctx, user, kind, n, until, now); err != nil {
			f.t.Fatalf("AddUsage(%s, %s, %d): %v", user[:8], kind, n, err)
		}
	}
	add(alice, store.UsageMsgBytes, 100, time.Time{})             // for ever
	add(alice, store.UsageMsgBytes, 50, now.Add(time.Hour))       // lapses within two days
	add(alice, store.UsageMsgBytes, 7, now.Add(time.Hour))        // the same day's bucket
	add(alice, store.UsageMsgBytes, 1000, now.Add(-72*time.Hour)) // lapsed already
	add(alice, store.UsageBlobBytes, 4096, time.Time{})
	add(bob, store.UsageMsgBytes, 1, time.Time{})
	if n := f.usage(l, alice, store.UsageMsgBytes, now); n != 157 {
		f.t.Errorf("alice's message bytes %d, want 157 (100 for ever + 57 until in an hour; 1000 lapsed)", n)
	}
	if n := f.usage(l, alice, store.UsageBlobBytes, now); n != 4096 {
		f.t.Errorf("alice's blob bytes %d, want 4096: kinds are counted apart", n)
	}
	if n := f.usage(l, bob, store.UsageMsgBytes, now); n != 1 {
		f.t.Errorf("bob's message bytes %d, want 1: users are counted apart", n)
	}
	if n := f.usage(l, alice, store.UsageMsgBytes, now.Add(72*time.Hour)); n != 100 {
		f.t.Errorf("three days on, alice's message bytes %d, want 100 (the hour's bytes lapsed)", n)
	}
	if err := l.AddUsage(f.ctx, alice, store.UsageMsgBytes, -5, time.Time{}, now); err == nil {
		f.t.Error("AddUsage of a negative count succeeded")
	}
	if n := f.usage(l, alice, store.UsageMsgBytes, now); n != 157 {
		f.t.Errorf("after a refused negative add, alice's message bytes %d, want 157", n)
	}
	// Another handle (another process or node) sees the same ledger.
	if n := f.usage(f.ledger(f.reopen()), alice, store.UsageMsgBytes, now); n != 157 {
		f.t.Errorf("a second handle reads %d bytes, want 157", n)
	}
	// Adding after the day lapsed drops it, and what lapsed never counts again.
	later := now.Add(72 * time.Hour)
	if err := l.AddUsage(f.ctx, alice, store.UsageMsgBytes, 1, time.Time{}, later); err != nil {
		f.t.Fatal(err)
	}
	if n := f.usage(l, alice, store.UsageMsgBytes, now); n != 101 {
		f.t.Errorf("after a later add dropped the lapsed day, the ledger holds %d bytes, want 101", n)
	}
}

func testUsageConcurrent(f *fixture) {
	l := f.ledger(f.s)
	alice := signPub("alice")
	now := at(0)
	const writers, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				errs <- l.AddUsage(f.ctx, alice, store.UsageMsgBytes, 3, time.Time{}, now)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			f.t.Fatalf("concurrent AddUsage: %v", err)
		}
	}
	if n := f.usage(l, alice, store.UsageMsgBytes, now); n != writers*each*3 {
		f.t.Errorf("after %d concurrent adds of 3, the ledger holds %d, want %d: an add was lost", writers*each, n, writers*each*3)
	}
}

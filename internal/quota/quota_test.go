package quota_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/quota"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/sqlite"
)

const alice = "a11ce00000000000000000000000000000000000000000000000000000000000"
const bob = "b0b0000000000000000000000000000000000000000000000000000000000000"

func openLedger(t *testing.T) (*sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// clock is the test's fake clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestMeterQuota(t *testing.T) {
	ctx := t.Context()
	s, path := openLedger(t)
	c := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	m := quota.New(s, store.UsageMsgBytes, 1000, quota.Options{Now: c.now})
	if err := m.Allow(ctx, alice, 1000); err != nil {
		t.Fatalf("a first message of exactly the quota: %v", err)
	}
	m.Charge(alice, 600, time.Time{})
	m.Charge(alice, 300, c.t.Add(time.Hour))
	if err := m.Allow(ctx, alice, 101); !errors.Is(err, quota.ErrExceeded) {
		t.Fatalf("900 charged of 1000, 101 more: %v, want ErrExceeded", err)
	}
	if err := m.Allow(ctx, alice, 100); err != nil {
		t.Fatalf("900 charged of 1000, 100 more: %v", err)
	}
	if err := m.Allow(ctx, bob, 1000); err != nil {
		t.Fatalf("another user is not charged for alice: %v", err)
	}
	// Nothing is in the ledger before a flush; after it, another meter
	// (another node, or this one after a restart) reads the same total.
	if n, _ := s.Usage(ctx, alice, store.UsageMsgBytes, c.t); n != 0 {
		t.Fatalf("ledger holds %d before a flush", n)
	}
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s2, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	other := quota.New(s2, store.UsageMsgBytes, 1000, quota.Options{Now: c.now})
	if left, err := other.Left(ctx, alice); err != nil || left != 100 {
		t.Fatalf("another meter: %d left (%v), want 100", left, err)
	}
	if err := m.Allow(ctx, alice, 101); !errors.Is(err, quota.ErrExceeded) {
		t.Fatalf("after the flush, 101 more: %v, want ErrExceeded", err)
	}
	// Two days on, the hour's 300 bytes have lapsed.
	c.t = c.t.Add(48 * time.Hour)
	if left, err := other.Left(ctx, alice); err != nil || left != 400 {
		t.Fatalf("two days on: %d left (%v), want 400", left, err)
	}
	// AddNow writes through at once.
	rooms := quota.New(s, store.UsageRooms, 2, quota.Options{Now: c.now})
	for i := range 2 {
		if err := rooms.Allow(ctx, alice, 1); err != nil {
			t.Fatalf("room %d: %v", i, err)
		}
		if err := rooms.AddNow(ctx, alice, 1, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rooms.Allow(ctx, alice, 1); !errors.Is(err, quota.ErrExceeded) || !strings.Contains(err.Error(), "rooms 2 of 2") {
		t.Fatalf("third room: %v, want ErrExceeded naming 2 of 2", err)
	}
}

func TestMeterNoLimitReadsNothing(t *testing.T) {
	s, _ := openLedger(t)
	m := quota.New(s, store.UsageBlobBytes, 0, quota.Options{})
	s.Close() // a read would fail
	if err := m.Allow(t.Context(), alice, 1<<40); err != nil {
		t.Fatalf("no quota: %v", err)
	}
}

// A ledger that cannot be read refuses; a charge whose write failed is
// kept and still counts.
func TestMeterFailsClosed(t *testing.T) {
	ctx := t.Context()
	s, _ := openLedger(t)
	c := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	m := quota.New(s, store.UsageMsgBytes, 1000, quota.Options{Now: c.now, Refresh: time.Hour})
	if err := m.Allow(ctx, alice, 1); err != nil {
		t.Fatal(err)
	}
	m.Charge(alice, 700, time.Time{})
	s.Close()
	if err := m.Flush(ctx); err == nil {
		t.Fatal("a flush to a closed ledger succeeded")
	}
	if err := m.Allow(ctx, alice, 301); !errors.Is(err, quota.ErrExceeded) {
		t.Fatalf("the unwritten 700 no longer count: %v", err)
	}
	c.t = c.t.Add(2 * time.Hour) // the cache is stale: the ledger must be read
	if err := m.Allow(ctx, bob, 1); err == nil || errors.Is(err, quota.ErrExceeded) {
		t.Fatalf("an unreadable ledger: %v, want its error", err)
	}
}

func TestMeterRunFlushesOnStop(t *testing.T) {
	s, _ := openLedger(t)
	m := quota.New(s, store.UsageMsgBytes, 0, quota.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { m.Run(ctx, time.Hour); close(done) }()
	m.Charge(alice, 42, time.Time{})
	cancel()
	<-done
	if n, err := s.Usage(t.Context(), alice, store.UsageMsgBytes, time.Now()); err != nil || n != 42 {
		t.Fatalf("after Run stopped the ledger holds %d (%v), want 42", n, err)
	}
}

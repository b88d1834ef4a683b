package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

// BenchmarkConcurrentWrites measures write throughput with 1 to 64
// concurrent writers: "nonce" is one UseNonce per op (a signed request);
// "room" is what the API does to create a room (the request's nonce, the
// audit entry, the room: three writes). writers=1 is the latency of a lone
// write. Besides ops/s each reports x-raw-commit, its ops/s over the
// engine's own rate of one-row transactions committed one after another
// with the same settings (WAL, synchronous=FULL) on the same disk,
// measured once per run (for at least half a second): about the ceiling
// of a store that commits every write on its own. Run with -cpu 1,2
// -benchmem.
func BenchmarkConcurrentWrites(b *testing.B) {
	raw := rawCommitRate(b)
	owner := strings.Repeat("ab", 32)
	ops := []struct {
		name string
		op   func(ctx context.Context, s *Store, i int64) error
	}{
		{"nonce", func(ctx context.Context, s *Store, i int64) error {
			now := time.Now()
			return s.UseNonce(ctx, owner, fmt.Sprint(i), now, now.Add(time.Minute))
		}},
		{"room", func(ctx context.Context, s *Store, i int64) error {
			now := time.Now()
			id := fmt.Sprintf("%032x", i)
			if err := s.UseNonce(ctx, owner, id, now, now.Add(time.Minute)); err != nil {
				return err
			}
			if _, err := s.AppendAudit(ctx, audit.Record{Time: now, Actor: owner, Via: audit.ViaCLI, Action: audit.ActionRoomCreate, Room: id}); err != nil {
				return err
			}
			return s.CreateRoom(ctx, store.Room{ID: id, Name: "bench", CreatedBy: owner, CreatedAt: now, Shared: true},
				store.Member{SignPub: owner, AddedBy: owner, AddedAt: now},
				store.SealedKey{Room: id, Epoch: 1, Member: owner, Sealer: owner, Sealed: make([]byte, 120), Sig: make([]byte, 64)})
		}},
	}
	for _, o := range ops {
		for _, writers := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", o.name, writers), func(b *testing.B) {
				ctx := context.Background()
				s, err := Open(ctx, filepath.Join(b.TempDir(), "unibus.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				now := time.Now()
				if err := s.AddUser(ctx, store.User{SignPub: owner, Handle: "owner", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				var next atomic.Int64
				var failed atomic.Pointer[error]
				var wg sync.WaitGroup
				for range writers {
					wg.Go(func() {
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							if err := o.op(ctx, s, i); err != nil {
								failed.CompareAndSwap(nil, &err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				if err := failed.Load(); err != nil {
					b.Fatal(*err)
				}
				rate := float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(rate, "ops/s")
				b.ReportMetric(rate/raw, "x-raw-commit")
			})
		}
	}
}

var rawRate = sync.OnceValues(func() (float64, error) {
	dir, err := os.MkdirTemp("", "unibus-raw-commit")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, "raw.db"), "journal_mode(WAL)", "synchronous(FULL)"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) STRICT`); err != nil {
		return 0, err
	}
	insert := func(i int) error {
		_, err := db.Exec(`INSERT INTO t VALUES (?, ?)`, fmt.Sprint(i), i)
		return err
	}
	for i := range 20 { // warm up
		if err := insert(-1 - i); err != nil {
			return 0, err
		}
	}
	n, start := 0, time.Now()
	for ; n < 200 || time.Since(start) < 500*time.Millisecond; n++ {
		if err := insert(n); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
})

// rawCommitRate is the engine's rate of one-row commits, one after
// another, on this machine's temporary directory.
func rawCommitRate(b *testing.B) float64 {
	b.Helper()
	r, err := rawRate()
	if err != nil {
		b.Fatalf("measure the raw commit rate: %v", err)
	}
	return r
}

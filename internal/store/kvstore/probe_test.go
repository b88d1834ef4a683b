package kvstore_test

import (
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// The health probe writes to the buckets on disk and leaves no trace in
// what the store answers: no user, no room epoch, no usage.
func TestProbeLeavesNoTrace(t *testing.T) {
	s, _ := openStore(t)
	ctx := t.Context()
	now := time.Now()
	for _, all := range []bool{false, true, true} {
		if err := s.Probe(ctx, now, all); err != nil {
			t.Fatalf("Probe(all=%v): %v", all, err)
		}
	}
	if us, err := s.ListUsers(ctx); err != nil || len(us) != 0 {
		t.Fatalf("users after the probes: %v (%v), want none", us, err)
	}
	if n, err := s.Usage(ctx, "probe", store.UsageChanges, now); err != nil || n != 0 {
		t.Fatalf("usage of the probe's key: %d (%v)", n, err)
	}
}

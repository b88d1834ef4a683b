package scrub

import (
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// The Verifier reads a block again only when it changed or its last
// reading is older than the reverify interval: damage that leaves the
// size and modification time alone (bit rot) is found once that interval
// has passed, damage that changes the file at the next view.
func TestVerifierReadsOnlyWhatChanged(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	ctx := testContext(t)
	v := NewVerifier(f.storeDir, time.Hour)
	clock := time.Unix(1_000_000_000, 0)
	v.now = func() time.Time { return clock }
	stream := func() Damage {
		t.Helper()
		d, err := v.Stream(ctx, f.account, fixtureStream)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	first := stream()
	if first.Records != 0 || first.Blocks == 0 || first.Bytes == 0 {
		t.Fatalf("first view: %+v; want every block read and no damage", first)
	}
	if again := stream(); again.Bytes != 0 || again.Blocks != first.Blocks || again.Records != 0 {
		t.Fatalf("second view of an unchanged store: %+v; want nothing read, %d blocks", again, first.Blocks)
	}

	// Bit rot: bytes change, size and modification time do not.
	f.shutdown()
	times := map[string]time.Time{}
	for _, p := range f.blocks() {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		times[p] = fi.ModTime()
	}
	f.modify(20, func(b []byte, at int) []byte { b[at+3] ^= 0x40; return b })
	for p, mt := range times {
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if d := stream(); d.Records != 0 || d.Bytes != 0 {
		t.Fatalf("within the reverify interval: %+v; want the earlier reading trusted", d)
	}
	clock = clock.Add(time.Hour)
	rot := stream()
	if rot.Records != 1 || len(rot.Seqs) != 1 || rot.Seqs[0] != 20 || rot.Bytes == 0 {
		t.Fatalf("after the reverify interval: %+v; want message 20 damaged", rot)
	}

	// Damage that changes the file is read at the next view.
	f.modify(21, func(b []byte, at int) []byte { b[at+3] ^= 0x40; return b })
	if d := stream(); d.Records != 2 || d.Bytes == 0 {
		t.Fatalf("after damaging message 21 too: %+v; want 2 damaged records", d)
	}
}

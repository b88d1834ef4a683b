// Package blobtest is the conformance suite for blobstore.Store, run
// against the file store and the object store on real backends.
package blobtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/unibus/unibus/internal/blobstore"
)

// Room is the room id the suite stores blobs in.
const Room = "00112233445566778899aabbccddeeff"

// Backend is a fresh, empty store and a count of what it holds on its
// medium (files, stream messages), to check that refusals leave nothing.
type Backend struct {
	Store  blobstore.Store
	Stored func() int
}

func blob(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// Run runs the suite; open is called once per subtest and returns an open
// store. notOpen, for a backend that opens in the background, returns a
// store whose open cannot complete during the test (no JetStream to open
// it on); a backend whose constructor returns only an open store
// (fileblobs) passes nil.
func Run(t *testing.T, open func(t *testing.T) Backend, notOpen func(t *testing.T) blobstore.Store) {
	if notOpen != nil {
		t.Run("NotOpenYet", func(t *testing.T) { testNotOpenYet(t, notOpen(t)) })
	}
	t.Run("PutOpenStat", func(t *testing.T) {
		b := open(t)
		ctx := t.Context()
		data, id := blob(300 << 10)
		info, err := b.Store.Put(ctx, Room, id, bytes.NewReader(data), 1<<20)
		if err != nil || info.Size != int64(len(data)) || info.ID != id || info.Room != Room {
			t.Fatalf("put: %+v %v", info, err)
		}
		rc, info, err := b.Store.Open(ctx, Room, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || info.Size != int64(len(data)) {
			t.Fatalf("round trip differs (%d bytes, %v)", len(got), err)
		}
		before := b.Stored()
		if _, err := b.Store.Put(ctx, Room, id, bytes.NewReader(data), 1<<20); err != nil {
			t.Fatalf("re-put of the same blob: %v", err)
		}
		if after := b.Stored(); after != before {
			t.Errorf("re-put rewrote the blob: %d stored items, then %d", before, after)
		}
		if _, err := b.Store.Stat(ctx, Room, "aa"+id[2:]); !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("stat missing: %v", err)
		}
		if _, _, err := b.Store.Open(ctx, Room, "aa"+id[2:]); !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("open missing: %v", err)
		}
		other := "ffeeddccbbaa99887766554433221100"
		if _, err := b.Store.Stat(ctx, other, id); !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("stat in another room: %v", err)
		}
	})
	t.Run("RefusalsLeaveNothing", func(t *testing.T) {
		b := open(t)
		ctx := t.Context()
		data, id := blob(300 << 10)
		other, _ := blob(300 << 10)
		cases := map[string]struct {
			r    io.Reader
			id   string
			max  int64
			want error
		}{
			"digest mismatch": {bytes.NewReader(other), id, 1 << 20, blobstore.ErrDigestMismatch},
			"too large":       {bytes.NewReader(data), id, 100 << 10, blobstore.ErrTooLarge},
			"over by one":     {bytes.NewReader(data), id, int64(len(data)) - 1, blobstore.ErrTooLarge},
			"path in the id":  {bytes.NewReader(data), "../../etc/passwd", 1 << 20, blobstore.ErrBadID},
			"cut":             {iotest.TimeoutReader(bytes.NewReader(data)), id, 1 << 20, iotest.ErrTimeout},
			"truncated":       {bytes.NewReader(data[:len(data)-1]), id, 1 << 20, blobstore.ErrDigestMismatch},
			"bad id":          {bytes.NewReader(data), "XYZ", 1 << 20, blobstore.ErrBadID},
		}
		for name, c := range cases {
			if _, err := b.Store.Put(ctx, Room, c.id, c.r, c.max); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", name, err, c.want)
			}
			if _, err := b.Store.Stat(ctx, Room, id); !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("%s: blob visible after a refused put: %v", name, err)
			}
			if n := b.Stored(); n != 0 {
				t.Errorf("%s: %d items left behind", name, n)
			}
		}
		if _, err := b.Store.Put(ctx, "not-a-room", id, bytes.NewReader(data), 1<<20); err == nil {
			t.Error("put into an invalid room id succeeded")
		}
		// Exactly at the limit is accepted.
		if _, err := b.Store.Put(ctx, Room, id, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Errorf("at the limit: %v", err)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		b := open(t)
		_, id := blob(0)
		if _, err := b.Store.Put(t.Context(), Room, id, bytes.NewReader(nil), 10); err != nil {
			t.Fatalf("empty blob: %v", err)
		}
		rc, info, err := b.Store.Open(t.Context(), Room, id)
		if err != nil || info.Size != 0 {
			t.Fatalf("open empty: %+v %v", info, err)
		}
		rc.Close()
	})
}

// testNotOpenYet: a store that is not open yet answers every method with
// ErrUnavailable (the API's 503), whatever the arguments, and closes
// promptly.
func testNotOpenYet(t *testing.T, s blobstore.Store) {
	ctx := t.Context()
	data, id := blob(10)
	if _, err := s.Put(ctx, Room, id, bytes.NewReader(data), 1<<20); !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Put: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Open(ctx, Room, id); !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Open: %v, want ErrUnavailable", err)
	}
	if _, err := s.Stat(ctx, Room, "bad id"); !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Stat: %v, want ErrUnavailable", err)
	}
	// Close stops the open in progress rather than wait out its budget
	// (the backends under test get minutes of it).
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close of a store still opening took %v: it waited for the open instead of stopping it", d)
	}
}

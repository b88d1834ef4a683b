package storetest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/store"
)

var nonceTests = []test{
	{"UseNonce", testUseNonce},
	{"UseNonceAfterExpiry", testUseNonceAfterExpiry},
	{"UseNonceConcurrent", testUseNonceConcurrent},
}

// window is the suite's nonce lifetime (the API uses twice its clock skew).
const window = 2 * time.Minute

func nonce(label string) string { return fmt.Sprintf("%x", filler(16, "nonce "+label)) }

func testUseNonce(f *fixture) {
	alice, bob := signPub("alice"), signPub("bob")
	now := at(0)
	use := func(key, n string, want error) {
		f.t.Helper()
		wantErr(f.t, fmt.Sprintf("UseNonce(%s, %s)", key[:8], n[:8]), f.s.UseNonce(f.ctx, key, n, now, now.Add(window)), want)
	}
	n1, n2 := nonce("1"), nonce("2")
	use(alice, n1, nil)
	use(alice, n1, store.ErrReplay)
	use(bob, n1, nil) // the same nonce under another key is another pair
	use(alice, n2, nil)
	use(bob, n1, store.ErrReplay)
	use(alice, n2, store.ErrReplay)
	now = now.Add(window / 2) // still inside the window
	use(alice, n1, store.ErrReplay)
}

func testUseNonceAfterExpiry(f *fixture) {
	key, n := signPub("alice"), nonce("1")
	t0 := at(0)
	wantErr(f.t, "first use", f.s.UseNonce(f.ctx, key, n, t0, t0.Add(window)), nil)
	t1 := t0.Add(window - time.Second)
	wantErr(f.t, "before expiry", f.s.UseNonce(f.ctx, key, n, t1, t1.Add(window)), store.ErrReplay)
	// The refused use did not extend the record: it expires at t0+window.
	t2 := t0.Add(window + time.Second)
	wantErr(f.t, "after expiry", f.s.UseNonce(f.ctx, key, n, t2, t2.Add(window)), nil)
	// The reuse is recorded in its turn, until t2+window.
	t3 := t2.Add(window - time.Second)
	wantErr(f.t, "replay of the reuse", f.s.UseNonce(f.ctx, key, n, t3, t3.Add(window)), store.ErrReplay)
	t4 := t2.Add(window + time.Second)
	wantErr(f.t, "after the second expiry", f.s.UseNonce(f.ctx, key, n, t4, t4.Add(window)), nil)
}

// 32 requests carrying the same (key, nonce) arrive at once: exactly one
// is accepted.
func testUseNonceConcurrent(f *fixture) {
	const n = 32
	key, nc := signPub("alice"), nonce("race")
	now := at(0)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f.s.UseNonce(f.ctx, key, nc, now, now.Add(window))
		})
	}
	close(start)
	wg.Wait()
	accepted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, store.ErrReplay):
			f.t.Errorf("use %d: %v, want nil or ErrReplay", i, err)
		}
	}
	if accepted != 1 {
		f.t.Errorf("%d of %d concurrent uses accepted, want exactly 1", accepted, n)
	}
}

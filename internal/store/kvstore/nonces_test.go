package kvstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/testnode"
)

// TestNonceRecordWithoutExpiryDenies: a nonce record that parses but has
// no expiry ("null", "{}": not something UseNonce writes) is never read
// as expired, which would allow the replay; the use is denied instead.
// Found by FuzzRecords.
func TestNonceRecordWithoutExpiryDenies(t *testing.T) {
	n := testnode.Start(t, "")
	nc := n.Control(t)
	s, err := Open(t.Context(), nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), BucketNonces)
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.Repeat("ab", 32)
	now := time.Now()
	for i, val := range []string{"null", "{}", `{"expires":"0001-01-01T00:00:00Z"}`} {
		nonce := "n" + string(rune('0'+i))
		if _, err := kv.Put(context.Background(), nonceKey(alice, nonce), []byte(val)); err != nil {
			t.Fatal(err)
		}
		err := s.UseNonce(t.Context(), alice, nonce, now, now.Add(time.Minute))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("record %s: UseNonce = %v, want a denial (ErrUnavailable)", val, err)
		}
	}
}

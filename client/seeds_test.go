package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
)

// A control-plane seed that stops answering costs one timeout, not one per
// request: the client stays on the server that answered.
func TestControlPlaneStaysOnTheSeedThatAnswered(t *testing.T) {
	var deadHits, liveHits atomic.Int32
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadHits.Add(1)
		<-r.Context().Done() // a host that accepts and never answers
	}))
	defer dead.Close()
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		liveHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	defer live.Close()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := Dial(ctx, Config{Identity: id, Servers: []string{dead.URL, live.URL}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if deadHits.Load() != 1 {
		t.Fatalf("dial: the silent seed got %d requests, want 1 (then the live one)", deadHits.Load())
	}
	for range 5 {
		if _, err := c.Me(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if deadHits.Load() != 1 || liveHits.Load() < 6 {
		t.Errorf("silent seed: %d requests, live seed: %d; want 1 and at least 6", deadHits.Load(), liveHits.Load())
	}
}

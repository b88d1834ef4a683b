package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// A control-plane seed that stops answering costs one timeout, not one per
// request: the client stays on the server that answered.
func TestControlPlaneStaysOnTheSeedThatAnswered(t *testing.T) {
	var deadHits, liveHits, untagged atomic.Int32
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadHits.Add(1)
		<-r.Context().Done() // a host that accepts and never answers
	}))
	defer dead.Close()
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		liveHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/healthz" { // Dial binds its signatures to the deployment announced here
			json.NewEncoder(w).Encode(wire.Health{Status: "ok", Protocol: wire.Protocol, Deployment: "seeds-test"})
			return
		}
		if !strings.Contains(r.Header.Get("Signature-Input"), `tag="`+wire.DeploymentTag("seeds-test")+`"`) {
			untagged.Add(1)
		}
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
	if n := untagged.Load(); n != 0 {
		t.Errorf("%d signed requests without the deployment's tag", n)
	}
}

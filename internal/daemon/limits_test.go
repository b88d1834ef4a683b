package daemon_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/wire"
)

// TestUserRateLimits: one member floods the control plane with reads and
// with changes; past its burst it gets 429 rate_limited (with
// Retry-After) and nothing is done, while another member and the admin
// keep working.
func TestUserRateLimits(t *testing.T) { forEachStore(t, testUserRateLimits) }

func testUserRateLimits(t *testing.T, kind storeKind) {
	// Low rates so that the bursts are short: 2 reads/s (bursts of 20),
	// 1 change/s (bursts of 10).
	b := startBus(t, storeOption(kind), withConfig(func(c *daemon.Config) { c.UserReads, c.UserChanges = 2, 1 }))
	ctx := ctxT(t)
	malloryID, mallory := b.user(t, "mallory")
	_, carol := b.user(t, "carol")

	// Reads: a burst passes, then 429 with Retry-After.
	limited := 0
	for range 40 {
		req := signed(t, b, "GET", "/v1/me", nil, malloryID.SignPub().String(), malloryID.SigningKey(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		} else if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/me: %d", resp.StatusCode)
		}
	}
	if limited < 15 || limited > 21 {
		t.Errorf("%d of 40 reads limited, want the ones past a burst of 20 (about 20)", limited)
	}

	// Changes: rooms past the burst are refused, and are not made.
	made, refused := 0, 0
	for range 20 {
		_, err := mallory.CreateRoom(ctx, "flood")
		var ae *client.APIError
		switch {
		case err == nil:
			made++
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && ae.Code == wire.CodeRateLimited:
			refused++
		default:
			t.Fatalf("create room: %v", err)
		}
	}
	stored, err := b.d.Store().RoomIDs(ctx, malloryID.SignPub().String())
	if err != nil {
		t.Fatal(err)
	}
	if refused == 0 || made > 12 || len(stored) != made {
		t.Errorf("changes: %d made, %d refused, %d stored; want a burst of about 10 made and stored, the rest refused", made, refused, len(stored))
	}

	// Everyone else is unaffected: another member, and the admin.
	if _, err := carol.CreateRoom(ctx, "fine"); err != nil {
		t.Errorf("another member during the flood: %v", err)
	}
	for range 30 {
		if _, err := b.admin.ListUsers(ctx); err != nil {
			t.Fatalf("the admin during the flood: %v", err)
		}
	}
}

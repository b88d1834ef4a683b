package kvstore_test

import (
	"errors"
	"testing"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/testnode"
)

// The deployment id lives in the users bucket under a key no user key
// uses: the user listings do not see it, it survives a restart of the
// node, and a corrupt record is unavailability, never a new id.
func TestDeploymentIDRecord(t *testing.T) {
	dir := t.TempDir()
	n := testnode.Start(t, dir)
	s := openOn(t, n)
	ctx := t.Context()
	addUsers(t, s, alice)
	id, err := s.DeploymentID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users := bucket(t, n, kvstore.BucketUsers)
	if r := record(t, users, "deployment"); r["id"] != id {
		t.Fatalf("UNIBUS_users/deployment = %v, want id %s", r, id)
	}
	if us, err := s.ListUsers(ctx); err != nil || len(us) != 1 || us[0].SignPub != alice {
		t.Errorf("ListUsers: %+v, %v; want alice only", us, err)
	}
	if got := kvstore.UserKeyPub("deployment"); got != "" {
		t.Errorf("UserKeyPub(deployment) = %q, want none", got)
	}

	s.Close()
	n.Shutdown()
	n = testnode.Start(t, dir)
	s = openOn(t, n)
	if got, err := s.DeploymentID(ctx); err != nil || got != id {
		t.Fatalf("DeploymentID after a restart: %q, %v; want %q", got, err, id)
	}

	plant(t, bucket(t, n, kvstore.BucketUsers), "deployment", map[string]any{"id": "not hex"})
	if got, err := s.DeploymentID(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("DeploymentID with a corrupt record: %q, %v; want ErrUnavailable", got, err)
	}
}

// ImportDeploymentID stores an id into a KV that has none, and otherwise
// returns the one the KV has.
func TestImportDeploymentID(t *testing.T) {
	s, _ := openStore(t)
	ctx := t.Context()
	want := "0123456789abcdef0123456789abcdef"
	if got, err := s.ImportDeploymentID(ctx, want); err != nil || got != want {
		t.Fatalf("ImportDeploymentID into an empty KV: %q, %v", got, err)
	}
	if got, err := s.DeploymentID(ctx); err != nil || got != want {
		t.Fatalf("DeploymentID after the import: %q, %v", got, err)
	}
	if got, err := s.ImportDeploymentID(ctx, "ffffffffffffffffffffffffffffffff"); err != nil || got != want {
		t.Fatalf("ImportDeploymentID over an existing id: %q, %v; want the existing %q", got, err, want)
	}
	if _, err := s.ImportDeploymentID(ctx, "ABC"); err == nil {
		t.Fatal("ImportDeploymentID accepted a malformed id")
	}
}

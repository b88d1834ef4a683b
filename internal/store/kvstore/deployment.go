package kvstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// deploymentKey is the UNIBUS_users key of the deployment id. It is
// neither a user record (u.<sign-pub>) nor a handle claim (h.<hex>), so
// the user listings and the watch of users (u.*) never see it, and
// UserKeyPub names no user for it.
const deploymentKey = "deployment"

// deploymentRec is UNIBUS_users/deployment, written once.
type deploymentRec struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
}

// DeploymentID implements store.Store: a get, and for the first call a
// create-if-absent, so that of concurrent first calls on any nodes one
// creates the record and every one returns its id.
func (s *Store) DeploymentID(ctx context.Context) (string, error) {
	return s.ensureDeploymentID(ctx, "")
}

// ImportDeploymentID stores id as the deployment's id unless the KV has
// one already, and returns the one it has (migrate-to-kv keeps a SQLite
// deployment's id).
func (s *Store) ImportDeploymentID(ctx context.Context, id string) (string, error) {
	if !store.ValidDeploymentID(id) {
		return "", wrap("import deployment id", fmt.Errorf("malformed deployment id %q: %w", id, errInvalid))
	}
	return s.ensureDeploymentID(ctx, id)
}

// ensureDeploymentID returns the stored id, storing want (or a new id when
// want is "") first if there is none.
func (s *Store) ensureDeploymentID(ctx context.Context, want string) (string, error) {
	const op = "deployment id"
	if err := s.check(op); err != nil {
		return "", err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var rec deploymentRec
	_, err := getJSON(ctx, s.users, deploymentKey, &rec)
	if errors.Is(err, store.ErrNotFound) {
		if want == "" {
			want = store.NewDeploymentID()
		}
		rec = deploymentRec{ID: want, CreatedAt: s.o.Now().UTC()}
		if _, err = s.users.Create(ctx, deploymentKey, jsonBytes(rec)); isConflict(err) {
			_, err = getJSON(ctx, s.users, deploymentKey, &rec)
		}
	}
	if err != nil {
		return "", wrap(op, err)
	}
	if !store.ValidDeploymentID(rec.ID) {
		return "", fmt.Errorf("%s: corrupt record %s in %s: %w", op, deploymentKey, BucketUsers, store.ErrUnavailable)
	}
	return rec.ID, nil
}

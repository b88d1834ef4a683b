// Package migrate copies a SQLite deployment — its deployment id, users,
// rooms with their members, epochs and sealed keys, and blobs — into the
// KV store and the blob object store of a live node ('membershipd
// migrate-to-kv').
//
// It is idempotent: what the KV already holds is left as it is, and a
// deployment id, user or room that differs there is reported as a
// conflict, never overwritten, so a second run copies nothing. Every user
// and room copy is recorded in the KV's audit log before it is made
// (store.Audited), with the SQLite log's head, which links the two chains.
//
// A room is copied only if a current member can reach it: a room whose
// every member was removed is not (nobody can use it).
package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/sqlite"
)

// Recorder records rec in the target's audit log, then runs apply (the
// copy); see store.Audited. The caller fills in who acts.
type Recorder func(ctx context.Context, log store.AuditLog, rec audit.Record, apply func() error) error

// Options configure ToKV.
type Options struct {
	// DB is the SQLite file to copy.
	DB string
	// BlobDir is the SQLite deployment's blob directory.
	BlobDir string
	// Conn is a connection of the live node's internal identity in the
	// control account.
	Conn *nats.Conn
	// Replicas of the buckets and the object store, when they are
	// created (1–5).
	Replicas int
	// Record audits each copy in the KV's log.
	Record Recorder
}

// kvBootstrap is how long ToKV waits for the KV buckets to open.
const kvBootstrap = 30 * time.Second

// ToKV copies the SQLite file o.DB and its blobs into the KV store and
// object store reached over o.Conn (creating them with o.Replicas when
// absent). The report says what was copied, what was there already and
// what conflicts; an error stops the copy where it was.
func ToKV(ctx context.Context, o Options) (Report, error) {
	if _, err := os.Stat(o.DB); err != nil {
		return Report{}, fmt.Errorf("the SQLite file: %w", err)
	}
	src, err := sqlite.Open(ctx, o.DB)
	if err != nil {
		return Report{}, err
	}
	defer src.Close()
	dst, err := kvstore.Open(ctx, o.Conn, kvstore.Options{Replicas: o.Replicas, Bootstrap: kvBootstrap})
	if err != nil {
		return Report{}, err
	}
	defer dst.Close()
	blobs, err := objblobs.Open(ctx, o.Conn, objblobs.Options{Replicas: o.Replicas})
	if err != nil {
		return Report{}, err
	}
	defer blobs.Close()
	from, err := sqliteAuditHead(ctx, src, o.DB)
	if err != nil {
		return Report{}, err
	}
	return Copy(ctx, src, dst, o.BlobDir, blobs, func(rec audit.Record, apply func() error) error {
		rec.Via, rec.Detail = audit.ViaMigrate, strings.TrimSpace(rec.Detail+" "+from)
		return o.Record(ctx, dst, rec, apply)
	})
}

// sqliteAuditHead names the SQLite deployment and where its audit chain
// ends, so that the KV log's migration entries link the two chains (the
// SQLite file keeps its own log; 'membershipd audit verify --db' checks
// it).
func sqliteAuditHead(ctx context.Context, src store.Store, db string) (string, error) {
	h, _, err := store.VerifyAudit(ctx, src, nil)
	if err != nil {
		return "", fmt.Errorf("read the SQLite audit log: %w", err)
	}
	return fmt.Sprintf("from=%s sqlite_audit_head=%d:%s", filepath.Base(db), h.Seq, h.Hash), nil
}

// Report says what a copy did.
type Report struct {
	Users, UsersPresent int
	Rooms, RoomsPresent int
	Keys, Members       int // of the rooms copied
	Blobs, BlobsPresent int
	// DeploymentID is the deployment's id in the KV after the copy: the
	// SQLite deployment's, unless the KV had one already (a conflict when
	// they differ).
	DeploymentID string
	// Conflicts describes each record that differs between the two
	// stores and was left unchanged.
	Conflicts []string
}

// Copied counts the users, rooms and blobs copied.
func (r Report) Copied() int { return r.Users + r.Rooms + r.Blobs }

func (r Report) String() string {
	s := fmt.Sprintf("users: %d copied, %d already present\nrooms: %d copied (%d members, %d sealed keys), %d already present\nblobs: %d copied, %d already present\n",
		r.Users, r.UsersPresent, r.Rooms, r.Members, r.Keys, r.RoomsPresent, r.Blobs, r.BlobsPresent)
	for _, n := range r.Conflicts {
		s += "conflict: " + n + "\n"
	}
	return s
}

func (r *Report) conflict(format string, args ...any) {
	r.Conflicts = append(r.Conflicts, fmt.Sprintf(format, args...))
}

// Copy copies what dst lacks from src, and the blobs of blobDir
// (<blobDir>/<room>/<id>) into blobs; each user and room copy is recorded
// first through record (an audited write, see store.Audited). The
// deployment id is copied first, unrecorded: it grants nothing.
func Copy(ctx context.Context, src store.Store, dst *kvstore.Store, blobDir string, blobs blobstore.Store, record func(audit.Record, func() error) error) (Report, error) {
	var rep Report
	id, err := src.DeploymentID(ctx)
	if err != nil {
		return rep, err
	}
	if rep.DeploymentID, err = dst.ImportDeploymentID(ctx, id); err != nil {
		return rep, err
	}
	if rep.DeploymentID != id {
		rep.conflict("the deployment id is %s in the KV, %s in SQLite", rep.DeploymentID, id)
	}
	users, err := src.ListUsers(ctx)
	if err != nil {
		return rep, err
	}
	for _, u := range users {
		had, err := dst.GetUser(ctx, u.SignPub)
		switch {
		case err == nil:
			rep.UsersPresent++
			if had.Handle != u.Handle || had.Role != u.Role || had.Status != u.Status {
				rep.conflict("user %s is %s/%s/%s in the KV, %s/%s/%s in SQLite", u.SignPub,
					had.Handle, had.Role, had.Status, u.Handle, u.Role, u.Status)
			}
			continue
		case !errors.Is(err, store.ErrNotFound):
			return rep, err
		}
		rec := audit.Record{Action: audit.ActionUserAdd, Subject: u.SignPub, Detail: "handle=" + u.Handle + " role=" + string(u.Role) + " status=" + string(u.Status)}
		if err := record(rec, func() error { return dst.AddUser(ctx, u) }); err != nil {
			if errors.Is(err, store.ErrHandleTaken) {
				rep.conflict("user %s: handle %q is another user's in the KV", u.SignPub, u.Handle)
				continue
			}
			return rep, err
		}
		rep.Users++
	}
	seen := map[string]bool{}
	for _, u := range users {
		rooms, err := src.ListRooms(ctx, u.SignPub)
		if err != nil {
			return rep, err
		}
		for _, r := range rooms {
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			if err := copyRoom(ctx, src, dst, r, record, &rep); err != nil {
				return rep, err
			}
		}
	}
	return rep, copyBlobs(ctx, blobDir, blobs, &rep)
}

// copyRoom copies one room unless dst has it.
func copyRoom(ctx context.Context, src store.Store, dst *kvstore.Store, r store.Room, record func(audit.Record, func() error) error, rep *Report) error {
	in, err := readRoom(ctx, src, r)
	if err != nil {
		return err
	}
	if _, err := dst.GetRoom(ctx, r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	} else if err == nil {
		return notePresentRoom(ctx, dst, r, rep)
	}
	var ok bool
	rec := audit.Record{Action: audit.ActionMigrate, Room: r.ID, Detail: fmt.Sprintf("room epoch=%d members=%d", r.Epoch, len(in.Members))}
	if err := record(rec, func() (err error) { ok, err = dst.ImportRoom(ctx, in); return err }); err != nil {
		return err
	}
	if !ok { // created by someone else since the check above
		return notePresentRoom(ctx, dst, r, rep)
	}
	rep.Rooms++
	rep.Members += len(in.Members)
	rep.Keys += len(in.Keys)
	return nil
}

// notePresentRoom counts a room the KV already has, and a conflict when it
// differs from SQLite's.
func notePresentRoom(ctx context.Context, dst *kvstore.Store, r store.Room, rep *Report) error {
	rep.RoomsPresent++
	had, err := dst.GetRoom(ctx, r.ID)
	if err != nil {
		return err
	}
	if had.Epoch != r.Epoch || had.Name != r.Name {
		rep.conflict("room %s is at epoch %d in the KV, %d in SQLite", r.ID, had.Epoch, r.Epoch)
	}
	if had.Shared != r.Shared {
		rep.conflict("room %s is shared=%v in the KV, shared=%v in SQLite", r.ID, had.Shared, r.Shared)
	}
	return nil
}

// readRoom reads a room's complete state, with the current members' keys.
func readRoom(ctx context.Context, src store.Store, r store.Room) (kvstore.RoomImport, error) {
	in := kvstore.RoomImport{Room: r}
	var err error
	if in.Epochs, err = src.Epochs(ctx, r.ID); err != nil {
		return in, err
	}
	if in.Members, err = src.ListMembers(ctx, r.ID); err != nil {
		return in, err
	}
	for _, m := range in.Members {
		ks, err := src.SealedKeys(ctx, r.ID, m.SignPub)
		if err != nil {
			return in, err
		}
		in.Keys = append(in.Keys, ks...)
	}
	return in, nil
}

// copyBlobs copies <dir>/<room>/<id> files; each is verified against its
// id by the object store's Put.
func copyBlobs(ctx context.Context, dir string, blobs blobstore.Store, rep *Report) error {
	rooms, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, rd := range rooms {
		if !rd.IsDir() || rd.Name() == ".tmp" {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, rd.Name()))
		if err != nil {
			return err
		}
		for _, fe := range files {
			room, id := rd.Name(), fe.Name()
			if !blobstore.ValidID(id) {
				continue
			}
			if _, err := blobs.Stat(ctx, room, id); err == nil {
				rep.BlobsPresent++
				continue
			} else if !errors.Is(err, blobstore.ErrNotFound) {
				return err
			}
			f, err := os.Open(filepath.Join(dir, room, id))
			if err != nil {
				return err
			}
			_, err = blobs.Put(ctx, room, id, f, 1<<62)
			f.Close()
			if err != nil {
				return fmt.Errorf("blob %s/%s: %w", room, id, err)
			}
			rep.Blobs++
		}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/sqlite"
)

func newMigrateCmd(stdout io.Writer) *cobra.Command {
	var db, blobDir string
	var k kvFlags
	cmd := &cobra.Command{
		Use:   "migrate-to-kv --db FILE --nats-url URL --replicas N [--ca FILE]",
		Short: "Copy a SQLite deployment (users, rooms, members, keys, blobs) into a live node's KV buckets",
		Long: `Copy a SQLite deployment into the KV buckets and blob object store of a
live membershipd (any mode; the buckets are created with --replicas when
absent), over its internal identity.

It is idempotent: what is already in the KV is left as it is (a user or room
that differs is reported, never overwritten), so a second run changes
nothing and says so. A non-loopback --nats-url is refused without --ca, before
any connection is made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := k.checkTarget(); err != nil {
				return err
			}
			if k.replicas < 1 || k.replicas > 5 {
				return &exitError{2, errors.New("--replicas must be 1 to 5")}
			}
			if _, err := os.Stat(db); err != nil {
				return &exitError{2, fmt.Errorf("--db: %w", err)}
			}
			ctx := cmd.Context()
			src, err := sqlite.Open(ctx, db)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, nc, err := k.openKV(ctx, true)
			if err != nil {
				return err
			}
			defer nc.Close()
			blobs, err := objblobs.Open(ctx, nc, objblobs.Options{Replicas: k.replicas})
			if err != nil {
				return err
			}
			from, err := sqliteAuditHead(ctx, src, db)
			if err != nil {
				return err
			}
			aud := openedStore{Store: dst, actor: k.actor}
			rep, err := migrate(ctx, src, dst, blobDir, blobs, func(rec audit.Record, apply func() error) error {
				rec.Via, rec.Detail = audit.ViaMigrate, strings.TrimSpace(rec.Detail+" "+from)
				return aud.audited(ctx, rec, apply)
			})
			fmt.Fprint(stdout, rep)
			if err != nil {
				return err
			}
			if rep.copied() == 0 {
				fmt.Fprintln(stdout, "nothing to do: the KV already holds everything in", db)
			}
			if rep.conflicts > 0 {
				return &exitError{1, fmt.Errorf("%d records differ between SQLite and the KV and were left unchanged", rep.conflicts)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&db, "db", filepath.Join("local_files", "unibus.db"), "the SQLite file to copy")
	f.StringVar(&blobDir, "blob-dir", filepath.Join("local_files", "blobs"), "the SQLite deployment's blob directory")
	k.register(f, "replicas")
	return cmd
}

type migrateReport struct {
	users, usersPresent int
	rooms, roomsPresent int
	keys, members       int
	blobs, blobsPresent int
	conflicts           int
	notes               []string
}

func (r migrateReport) copied() int { return r.users + r.rooms + r.blobs }

func (r migrateReport) String() string {
	s := fmt.Sprintf("users: %d copied, %d already present\nrooms: %d copied (%d members, %d sealed keys), %d already present\nblobs: %d copied, %d already present\n",
		r.users, r.usersPresent, r.rooms, r.members, r.keys, r.roomsPresent, r.blobs, r.blobsPresent)
	for _, n := range r.notes {
		s += "conflict: " + n + "\n"
	}
	return s
}

// sqliteAuditHead names the SQLite deployment and where its audit chain
// ends, so that the KV log's migration entries link the two chains (the
// SQLite file keeps its own log; `membershipd audit verify --db` checks it).
func sqliteAuditHead(ctx context.Context, src store.Store, db string) (string, error) {
	h, err := auditHead(ctx, src)
	if err != nil {
		return "", fmt.Errorf("read the SQLite audit log: %w", err)
	}
	return fmt.Sprintf("from=%s sqlite_audit_head=%d:%s", filepath.Base(db), h.Seq, h.Hash), nil
}

// migrate copies what the KV lacks; each copy is recorded first through
// record (an audited write, see store.Audited).
func migrate(ctx context.Context, src store.Store, dst *kvstore.Store, blobDir string, blobs blobstore.Store, record func(audit.Record, func() error) error) (migrateReport, error) {
	var rep migrateReport
	users, err := src.ListUsers(ctx)
	if err != nil {
		return rep, err
	}
	for _, u := range users {
		had, err := dst.GetUser(ctx, u.SignPub)
		switch {
		case err == nil:
			rep.usersPresent++
			if had.Handle != u.Handle || had.Role != u.Role || had.Status != u.Status {
				rep.conflicts++
				rep.notes = append(rep.notes, fmt.Sprintf("user %s is %s/%s/%s in the KV, %s/%s/%s in SQLite", u.SignPub,
					had.Handle, had.Role, had.Status, u.Handle, u.Role, u.Status))
			}
			continue
		case !errors.Is(err, store.ErrNotFound):
			return rep, err
		}
		rec := audit.Record{Action: audit.ActionUserAdd, Subject: u.SignPub, Detail: "handle=" + u.Handle + " role=" + string(u.Role) + " status=" + string(u.Status)}
		if err := record(rec, func() error { return dst.AddUser(ctx, u) }); err != nil {
			if errors.Is(err, store.ErrHandleTaken) {
				rep.conflicts++
				rep.notes = append(rep.notes, fmt.Sprintf("user %s: handle %q is another user's in the KV", u.SignPub, u.Handle))
				continue
			}
			return rep, err
		}
		rep.users++
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
			in, err := readRoom(ctx, src, r)
			if err != nil {
				return rep, err
			}
			if _, err := dst.GetRoom(ctx, r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return rep, err
			} else if err == nil {
				if err := notePresentRoom(ctx, dst, r, &rep); err != nil {
					return rep, err
				}
				continue
			}
			var ok bool
			rec := audit.Record{Action: audit.ActionMigrate, Room: r.ID, Detail: fmt.Sprintf("room epoch=%d members=%d", r.Epoch, len(in.Members))}
			if err := record(rec, func() (err error) { ok, err = dst.ImportRoom(ctx, in); return err }); err != nil {
				return rep, err
			}
			if !ok { // created by someone else since the check above
				if err := notePresentRoom(ctx, dst, r, &rep); err != nil {
					return rep, err
				}
				continue
			}
			rep.rooms++
			rep.members += len(in.Members)
			rep.keys += len(in.Keys)
		}
	}
	return rep, migrateBlobs(ctx, blobDir, blobs, &rep)
}

// notePresentRoom counts a room the KV already has, and a conflict when it
// differs from SQLite's.
func notePresentRoom(ctx context.Context, dst *kvstore.Store, r store.Room, rep *migrateReport) error {
	rep.roomsPresent++
	had, err := dst.GetRoom(ctx, r.ID)
	if err != nil {
		return err
	}
	if had.Epoch != r.Epoch || had.Name != r.Name {
		rep.conflicts++
		rep.notes = append(rep.notes, fmt.Sprintf("room %s is at epoch %d in the KV, %d in SQLite", r.ID, had.Epoch, r.Epoch))
	}
	return nil
}

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

// migrateBlobs copies <blobDir>/<room>/<id> files; each is verified
// against its id by the object store's Put.
func migrateBlobs(ctx context.Context, dir string, blobs blobstore.Store, rep *migrateReport) error {
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
				rep.blobsPresent++
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
			rep.blobs++
		}
	}
	return nil
}

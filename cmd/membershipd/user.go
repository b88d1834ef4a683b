package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/sqlite"
)

// userOpts are the store selection flags shared by the user subcommands.
type userOpts struct {
	db        string
	storeKind string
	json      bool
	kv        kvFlags
}

func newUserCmd(stdout io.Writer) *cobra.Command {
	o := &userOpts{}
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Administer users directly in the store (add, list, revoke)",
		Long: `Administer users directly in the store.

With --store sqlite (default) these commands open the SQLite file (--db) and
work whether or not membershipd is running. A revocation made here is denied
at the user's next request or login; to also close the user's live
connections at once, revoke through the API instead (unibus user revoke).

With --store kv they work against a live node's replicated KV buckets, over
membershipd's internal identity (--nats-url, --internal-id-file, --ca): the
write commits through the JetStream quorum, every node's watcher applies it
(a revocation closes the user's connections on every node), and 'user add'
prints the users bucket's replication.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.db, "db", filepath.Join("local_files", "unibus.db"), "SQLite file")
	pf.StringVar(&o.storeKind, "store", "sqlite", "store: sqlite (the --db file) or kv (a live node's KV buckets)")
	pf.BoolVar(&o.json, "json", false, "print JSON")
	o.kv.register(pf, "kv-replicas")
	cmd.AddCommand(newUserAddCmd(stdout, o), newUserListCmd(stdout, o), newUserRevokeCmd(stdout, o))
	return cmd
}

// openedStore is a store and what to release with it.
type openedStore struct {
	store.Store
	kv    *kvstore.Store
	close func()
	// actor is who the audit log names for changes made here: the internal
	// identity (kv), or "local" — whoever could open the SQLite file.
	actor string
}

// audited applies a change after recording it in the store's audit log.
func (s openedStore) audited(ctx context.Context, rec audit.Record, apply func() error) error {
	return store.AuditedAs(ctx, s, s.actor, audit.ViaCLI, rec, apply)
}

func (s openedStore) Close() error {
	err := s.Store.Close()
	if s.close != nil {
		s.close()
	}
	return err
}

func (o *userOpts) open(ctx context.Context) (openedStore, error) {
	switch o.storeKind {
	case "sqlite":
		st, err := sqlite.Open(ctx, o.db)
		if err != nil {
			return openedStore{}, err
		}
		return openedStore{Store: st, actor: audit.ActorLocal}, nil
	case "kv":
		kv, nc, err := o.kv.openKV(ctx)
		if err != nil {
			return openedStore{}, err
		}
		return openedStore{Store: kv, kv: kv, close: nc.Close, actor: o.kv.actor}, nil
	}
	return openedStore{}, &exitError{2, fmt.Errorf("--store must be sqlite or kv, not %q", o.storeKind)}
}

func newUserAddCmd(stdout io.Writer, o *userOpts) *cobra.Command {
	var handle, signPub, role string
	cmd := &cobra.Command{
		Use:   "add --handle H --sign-pub HEX --role admin|member",
		Short: "Register a user; re-adding a key is an error (exit 1), never an overwrite",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !identity.ValidHandle(handle) {
				return &exitError{2, fmt.Errorf("--handle must match [a-z0-9][a-z0-9._-]{0,62}")}
			}
			if _, err := identity.ParseSignPub(signPub); err != nil {
				return &exitError{2, fmt.Errorf("--sign-pub: %w", err)}
			}
			if role != string(store.RoleAdmin) && role != string(store.RoleMember) {
				return &exitError{2, fmt.Errorf("--role must be admin or member")}
			}
			st, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			now := time.Now().UTC()
			u := store.User{SignPub: signPub, Handle: handle, Role: store.Role(role), Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}
			rec := audit.Record{Action: audit.ActionUserAdd, Subject: u.SignPub, Detail: "handle=" + u.Handle + " role=" + string(u.Role)}
			if err := st.audited(cmd.Context(), rec, func() error { return st.AddUser(cmd.Context(), u) }); err != nil {
				if errors.Is(err, store.ErrAlreadyRegistered) {
					return &exitError{1, fmt.Errorf("already registered: %s is already a user (role unchanged); to replace it, revoke it and add a new key", signPub)}
				}
				return err
			}
			if err := printUser(stdout, o.json, u, "added user"); err != nil {
				return err
			}
			if st.kv != nil && !o.json {
				line, err := kvstore.DescribeReplication(cmd.Context(), st.kv.StreamFor(kvstore.BucketUsers), 5*time.Second)
				if err != nil {
					return fmt.Errorf("user added; reading the users bucket's replication failed: %w", err)
				}
				fmt.Fprintln(stdout, line)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&handle, "handle", "", "unique handle ([a-z0-9][a-z0-9._-]{0,62})")
	f.StringVar(&signPub, "sign-pub", "", "the user's sign-pub (64 hex; printed by unibus keygen)")
	f.StringVar(&role, "role", "member", "admin or member")
	_ = cmd.MarkFlagRequired("handle")
	_ = cmd.MarkFlagRequired("sign-pub")
	return cmd
}

func newUserListCmd(stdout io.Writer, o *userOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List users, revoked ones included",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			us, err := st.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			if o.json {
				out := make([]userJSON, 0, len(us))
				for _, u := range us {
					out = append(out, toJSON(u))
				}
				return json.NewEncoder(stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HANDLE\tROLE\tSTATUS\tKEM\tSIGN-PUB")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", u.Handle, u.Role, u.Status, len(u.KEMPub) > 0, u.SignPub)
			}
			return tw.Flush()
		},
	}
}

func newUserRevokeCmd(stdout io.Writer, o *userOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke SIGN-PUB",
		Short: "Revoke a user: the row stays, with status revoked; denied on both planes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := identity.ParseSignPub(args[0]); err != nil {
				return &exitError{2, err}
			}
			st, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			var u store.User
			rec := audit.Record{Action: audit.ActionUserRevoke, Subject: args[0]}
			err = st.audited(cmd.Context(), rec, func() (err error) {
				u, _, err = store.Revoke(cmd.Context(), st, args[0], time.Now().UTC())
				return err
			})
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{1, fmt.Errorf("no user with sign-pub %s", args[0])}
			}
			if err != nil {
				return err
			}
			return printUser(stdout, o.json, u, "revoked user")
		},
	}
}

type userJSON struct {
	Handle  string `json:"handle"`
	SignPub string `json:"sign_pub"`
	Role    string `json:"role"`
	Status  string `json:"status"`
	KEM     bool   `json:"kem_published"`
}

func toJSON(u store.User) userJSON {
	return userJSON{Handle: u.Handle, SignPub: u.SignPub, Role: string(u.Role), Status: string(u.Status), KEM: len(u.KEMPub) > 0}
}

func printUser(w io.Writer, asJSON bool, u store.User, verb string) error {
	if asJSON {
		return json.NewEncoder(w).Encode(toJSON(u))
	}
	_, err := fmt.Fprintf(w, "%s %q (%s) role=%s status=%s\n", verb, u.Handle, u.SignPub, u.Role, u.Status)
	return err
}

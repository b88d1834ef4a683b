package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

func newAuditCmd(stdout io.Writer) *cobra.Command {
	o := &userOpts{}
	var after uint64
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit log of admin and membership actions (audit verify checks its chain)",
		Long: `List the append-only, hash-chained audit log: every admin and membership
action (user add/revoke, KEM key publication, room create, member add/remove,
rotation, first-run bootstrap, migration) with its actor's key, the path it
came by, and the digest of the signed request. Entries are written before the
change they describe; a "failed" entry marks one the store then refused.

With --store sqlite (default) it reads the --db file; with --store kv a live
node's audit stream over the internal identity (--nats-url,
--internal-id-file, --ca).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			es, err := store.ListAudit(cmd.Context(), st, after, limit)
			if err != nil {
				return err
			}
			if o.json {
				enc := json.NewEncoder(stdout)
				for _, e := range es {
					if err := enc.Encode(e); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tVIA\tACTION\tROOM\tSUBJECT\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format("2006-01-02T15:04:05Z"),
					short(e.Actor), e.Via, e.Action, short(e.Room), short(e.Subject), failedDetail(e))
			}
			return tw.Flush()
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.db, "db", "local_files/unibus.db", "SQLite file")
	pf.StringVar(&o.storeKind, "store", "sqlite", "store: sqlite (the --db file) or kv (a live node's audit stream)")
	pf.BoolVar(&o.json, "json", false, "print one JSON entry per line")
	o.kv.register(pf, "kv-replicas")
	cmd.Flags().Uint64Var(&after, "after", 0, "list entries after this seq")
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most this many entries (0 = all)")
	cmd.AddCommand(newAuditVerifyCmd(stdout, o))
	return cmd
}

func newAuditVerifyCmd(stdout io.Writer, o *userOpts) *cobra.Command {
	var expect string
	cmd := &cobra.Command{
		Use:   "verify [--expect-head SEQ:HASH]",
		Short: "Check the audit log's hash chain; exit 1 if any entry was edited, removed or reordered",
		Long: `Check every entry of the audit log: consecutive seqs from 1, each entry's
prev equal to the hash of the one before, each hash equal to the SHA-256 of
its entry. It prints the head (the last seq and hash). The chain alone cannot
show that the newest entries were cut off: keep the printed head somewhere the
bus cannot write, and pass it back with --expect-head to check that the log
still contains it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var want *audit.Head
			if expect != "" {
				h, err := parseHead(expect)
				if err != nil {
					return &exitError{2, err}
				}
				want = &h
			}
			st, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			head, found, err := store.VerifyAudit(cmd.Context(), st, want)
			if err != nil {
				if errors.Is(err, audit.ErrBroken) || errors.Is(err, audit.ErrInvalid) {
					fmt.Fprintf(stdout, "audit log BROKEN after seq %d: %v\n", head.Seq, err)
					return &exitError{1, errors.New("the audit log has been tampered with or damaged")}
				}
				return err
			}
			if want != nil && !found {
				fmt.Fprintf(stdout, "audit log TRUNCATED: entry %d:%s is not in the log (head is %d:%s)\n", want.Seq, want.Hash, head.Seq, head.Hash)
				return &exitError{1, errors.New("the audit log no longer contains the expected head")}
			}
			fmt.Fprintf(stdout, "audit log intact: %d entries, head %d:%s\n", head.Seq, head.Seq, head.Hash)
			return nil
		},
	}
	cmd.Flags().StringVar(&expect, "expect-head", "", "a head printed by an earlier verify (SEQ:HASH) that must still be in the log")
	return cmd
}

// parseHead parses --expect-head.
func parseHead(s string) (audit.Head, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil || n == 0 || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return audit.Head{}, fmt.Errorf("--expect-head must be SEQ:HASH as printed by audit verify (64 lowercase hex), not %q", s)
	}
	return audit.Head{Seq: n, Hash: hash}, nil
}

// short abbreviates a 64-hex key or 32-hex room id for the table.
func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

func failedDetail(e audit.Entry) string {
	if e.Action == audit.ActionFailed {
		return fmt.Sprintf("(entry %d not applied) %s", e.Refers, e.Detail)
	}
	return e.Detail
}

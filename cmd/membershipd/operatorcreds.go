package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
)

// newOperatorCredsCmd is `membershipd operator-creds`: a read-only
// operator credential for the nats CLI, as a nats context.
func newOperatorCredsCmd(stdout io.Writer) *cobra.Command {
	var k kvFlags
	var name string
	var valid time.Duration
	var noSelect bool
	cmd := &cobra.Command{
		Use:   "operator-creds [--context unibus] [--valid 8760h]",
		Short: "Write a read-only operator credential for the nats CLI (server and JetStream reports) as a nats context, and select it",
		Long: `Write a nats CLI context (~/.config/nats/context/NAME.json, 0600; or under
$XDG_CONFIG_HOME) holding an operator token this node's internal identity
signs, the node's NATS URL and CA, and select it. With it, on the node,
'nats server list' and 'nats server report jetstream' (also with
--server nats://127.0.0.1:4250) read the reports of every node of the
cluster from the system account. The token allows nothing else: not the
control-plane buckets, not a stream or consumer change, not the list of
connections. It is a bearer credential: keep the file 0600; it expires
after --valid, and making a new internal identity revokes every token.

On a node, the internal identity, the URL and the CA come from its
cluster.env (see 'user --help'); reading the internal identity takes root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if valid <= 0 {
				return &exitError{2, errors.New("--valid must be a positive duration such as 8760h")}
			}
			if !validContextName(name) {
				return &exitError{2, fmt.Errorf("--context %q: use letters, digits, '-' and '_'", name)}
			}
			if err := k.checkTarget(); err != nil {
				return err
			}
			id, err := identity.Load(k.idFile)
			if err != nil {
				return fmt.Errorf("internal identity%s: %w", k.from(), err)
			}
			raw := make([]byte, 10)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			expires := time.Now().Add(valid).UTC().Truncate(time.Second)
			token, err := natsnode.OperatorToken(id.SignNonce, hex.EncodeToString(raw), expires)
			if err != nil {
				return err
			}
			ca := ""
			if k.ca != "" {
				if ca, err = filepath.Abs(k.ca); err != nil {
					return err
				}
			}
			dir, err := natsConfigDir()
			if err != nil {
				return err
			}
			path, err := writeNATSContext(dir, name, natsContext{
				Description: "unibus operator: read-only server and JetStream reports (membershipd operator-creds)",
				URL:         k.natsURL, Token: token, CA: ca,
			}, !noSelect)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote nats context %q: %s (0600), for %s, valid until %s\n", name, path, k.natsURL, expires.Format(time.RFC3339))
			if !noSelect {
				fmt.Fprintf(stdout, "selected it: try nats server list; nats server report jetstream\n")
			}
			return nil
		},
	}
	f := cmd.Flags()
	k.register(f, "kv-replicas")
	_ = f.MarkHidden("kv-replicas")
	f.StringVar(&name, "context", "unibus", "name of the nats context")
	f.DurationVar(&valid, "valid", 365*24*time.Hour, "how long the credential is valid")
	f.BoolVar(&noSelect, "no-select", false, "do not select the context (nats context select NAME does)")
	return cmd
}

// natsContext is the part of a nats CLI context file this command writes.
type natsContext struct {
	Description string `json:"description"`
	URL         string `json:"url"`
	Token       string `json:"token"`
	CA          string `json:"ca,omitempty"`
}

func validContextName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// natsConfigDir is where the nats CLI keeps its contexts:
// $XDG_CONFIG_HOME/nats, or ~/.config/nats.
func natsConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("the nats CLI's configuration directory: %w", err)
	}
	return filepath.Join(home, ".config", "nats"), nil
}

// writeNATSContext writes dir/context/NAME.json (0600) and, with sel,
// dir/context.txt naming it; it returns the context file's path.
func writeNATSContext(dir, name string, c natsContext, sel bool) (string, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	ctxDir := filepath.Join(dir, "context")
	if err := os.MkdirAll(ctxDir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(ctxDir, name+".json")
	if err := writeFile0600(path, append(b, '\n')); err != nil {
		return "", err
	}
	if sel {
		if err := writeFile0600(filepath.Join(dir, "context.txt"), []byte(name)); err != nil {
			return "", err
		}
	}
	return path, nil
}

// writeFile0600 replaces path with b through a 0600 temporary file.
func writeFile0600(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

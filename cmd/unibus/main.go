// Command unibus is the unibus client: identities, rooms, members, and end-
// to-end encrypted messages. Output is for people by default and JSON with
// --json. Global flags also come from the environment (UNIBUS_SERVER,
// UNIBUS_NATS, UNIBUS_IDENTITY, UNIBUS_CA).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/envflag"
)

var version = "dev"

// Exit statuses: 0 ok, 1 the operation failed (denied, conflict, not
// found…), 2 usage or local input error, 3 the server could not be
// reached, 4 cut off: the identity was revoked, or is no longer a member
// of the room it listens to or sends to (retrying will not help).
const (
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitCutOff      = 4
)

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdin, os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "unibus:", err)
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, client.ErrRevoked) || errors.Is(err, client.ErrRemoved) || errors.Is(err, client.ErrNotMember) {
		return exitCutOff
	}
	if strings.Contains(err.Error(), "unreachable") {
		return exitUnreachable
	}
	return exitFailed
}

// app holds the global flags and the lazily dialled client.
type app struct {
	servers  []string
	nats     []string
	idFile   string
	known    string
	ca       string
	json     bool
	timeout  time.Duration
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	verbose  bool
	dialled  *client.Client
	identity *identity.Identity
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "unibus",
		Short:         "unibus client: end-to-end encrypted rooms over a unibus bus",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags(), nil); err != nil {
				return &exitError{exitUsage, err}
			}
			return nil
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if a.dialled != nil {
				a.dialled.Close()
			}
		},
	}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&a.servers, "server", []string{client.DefaultServer}, "control-plane URL(s), comma-separated, tried in order")
	pf.StringSliceVar(&a.nats, "nats", []string{client.DefaultNATS}, "data-plane seed URL(s), comma-separated")
	pf.StringVar(&a.idFile, "identity", "", "identity file (from unibus keygen)")
	pf.StringVar(&a.ca, "ca", "", "CA certificate (PEM) that signed the servers' certificates")
	// The help names the default the way client.DefaultKnownKeysFile makes it.
	pf.StringVar(&a.known, "known-keys", "", "file of the users' keys pinned on first sight (default: "+client.DefaultKnownKeysFile("the identity file's path + ")+")")
	pf.BoolVar(&a.json, "json", false, "print JSON (one object per line)")
	pf.DurationVar(&a.timeout, "timeout", 15*time.Second, "timeout of each control-plane request")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log reconnects and warnings to stderr")
	root.AddCommand(newKeygenCmd(a), newWhoamiCmd(a), newRegisterCmd(a), newRoomCmd(a),
		newSendCmd(a), newListenCmd(a), newUserCmd(a), newBlobCmd(a), newWhoisCmd(a))
	return root
}

// loadIdentity loads --identity.
func (a *app) loadIdentity() (*identity.Identity, error) {
	if a.identity != nil {
		return a.identity, nil
	}
	if a.idFile == "" {
		return nil, usageErr("no identity: pass --identity FILE or set UNIBUS_IDENTITY (create one with: unibus keygen -o FILE)")
	}
	id, err := identity.Load(a.idFile)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	a.identity = id
	return id, nil
}

// client dials the deployment with the global flags.
func (a *app) client(ctx context.Context) (*client.Client, error) {
	if a.dialled != nil {
		return a.dialled, nil
	}
	id, err := a.loadIdentity()
	if err != nil {
		return nil, err
	}
	cfg := client.Config{Identity: id, Servers: a.servers, NATS: a.nats, Timeout: a.timeout, Logger: newLogger(a.stderr, a.verbose),
		KnownKeysFile: a.known}
	if cfg.KnownKeysFile == "" {
		cfg.KnownKeysFile = client.DefaultKnownKeysFile(a.idFile)
	}
	if a.ca != "" {
		if cfg.RootCAs, err = client.LoadCA(a.ca); err != nil {
			return nil, &exitError{exitUsage, err}
		}
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.dialled = c
	return c, nil
}

// print writes v as JSON with --json, else the human text.
func (a *app) print(v any, human string) error {
	if a.json {
		return json.NewEncoder(a.stdout).Encode(v)
	}
	_, err := fmt.Fprintln(a.stdout, human)
	return err
}

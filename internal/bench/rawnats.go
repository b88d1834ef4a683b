package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
)

// RawNATSSpec describes a plain nats-server for the login baselines.
type RawNATSSpec struct {
	// Auth is RawNoAuth, RawNKey (nats-server's own nkey check of one
	// user) or RawNKeyACL (the same, with the permissions membershipd
	// gives every member).
	Auth       string `json:"auth"`
	NKey       string `json:"nkey,omitempty"`
	SignPubHex string `json:"sign_pub,omitempty"`
}

// Kinds of raw login baseline.
const (
	RawNoAuth  = "none"
	RawNKey    = "nkey"
	RawNKeyACL = "nkey+acl"
)

// RawNATSFlag is the hidden unibus-bench flag that makes the command serve
// one raw baseline (a JSON RawNATSSpec) instead of measuring: the bench
// starts itself with it, so that the baseline server runs in a process of
// its own, as membershipd does, and its CPU is measured the same way.
const RawNATSFlag = "serve-raw-nats"

func (s RawNATSSpec) options() (*server.Options, error) {
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxConn: 1 << 16}
	switch s.Auth {
	case RawNoAuth:
	case RawNKey, RawNKeyACL:
		u := &server.NkeyUser{Nkey: s.NKey}
		if s.Auth == RawNKeyACL {
			u.Permissions = natsnode.Permissions(natsnode.Grant{Active: true, SignPubHex: s.SignPubHex})
		}
		o.Nkeys = []*server.NkeyUser{u}
	default:
		return nil, fmt.Errorf("raw nats-server: unknown auth %q", s.Auth)
	}
	return o, nil
}

// ServeRawNATS runs the raw baseline server spec (a JSON RawNATSSpec)
// describes, writes "ready <client URL>" to w, and serves until r reaches
// its end (the parent closed the pipe, or died) or ctx ends.
func ServeRawNATS(ctx context.Context, spec string, r io.Reader, w io.Writer) error {
	var s RawNATSSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return fmt.Errorf("raw nats-server spec: %w", err)
	}
	srv, err := startRawServer(s)
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	return serveUntilEOF(ctx, srv.ClientURL(), r, w)
}

// serveUntilEOF is the child side of startSelf: it writes "ready <url>"
// to w and returns when r reaches its end (the parent closed the pipe, or
// died) or ctx ends.
func serveUntilEOF(ctx context.Context, url string, r io.Reader, w io.Writer) error {
	if _, err := fmt.Fprintf(w, "ready %s\n", url); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, r); close(eof) }()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return nil
}

func startRawServer(s RawNATSSpec) (*server.Server, error) {
	o, err := s.options()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("raw nats-server did not start")
	}
	return srv, nil
}

// child is a running baseline server: a child process (pid > 0) or, when
// the bench has no executable to start, a server in this process.
type child struct {
	url  string
	pid  int
	stop func()
}

// startRawNATS starts the baseline server: self, run with RawNATSFlag, or
// in this process when self is empty.
func startRawNATS(ctx context.Context, self string, s RawNATSSpec) (*child, error) {
	if self == "" {
		srv, err := startRawServer(s)
		if err != nil {
			return nil, err
		}
		return &child{url: srv.ClientURL(), stop: func() { srv.Shutdown(); srv.WaitForShutdown() }}, nil
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return startSelf(ctx, self, RawNATSFlag, string(spec), "raw nats-server")
}

// startSelf runs self --flag spec as a child process and waits for its
// "ready <url>" line. Closing its stdin (stop) ends it.
func startSelf(ctx context.Context, self, flag, spec, what string) (*child, error) {
	cmd := exec.Command(self, "--"+flag, spec)
	cmd.Env = harness.CleanEnv()
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s (%s --%s): %w", what, self, flag, err)
	}
	stop := func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		url, ok := strings.CutPrefix(l, "ready ")
		if !ok {
			stop()
			return nil, fmt.Errorf("%s (%s --%s) did not start: %q", what, self, flag, l)
		}
		return &child{url: url, pid: cmd.Process.Pid, stop: stop}, nil
	case <-time.After(20 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return nil, fmt.Errorf("%s (%s --%s) not ready", what, self, flag)
}

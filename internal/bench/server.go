package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// ErrNotImplemented is returned by StartServer when membershipd refuses a
// configuration it does not implement yet (for example --store kv before
// that store lands): the scenario is reported as skipped, not failed.
var ErrNotImplemented = errors.New("not implemented by this membershipd")

// readyWait bounds how long StartServer waits for membershipd to be ready.
const readyWait = 90 * time.Second

// Server is a membershipd process the bench started.
type Server struct {
	HTTPURL string
	NATSURL string
	// AdminIDFile is the bootstrapped admin identity, InternalIDFile
	// membershipd's internal identity (the raw baseline's login).
	AdminIDFile    string
	InternalIDFile string
	Store          string
	JSSync         string

	dir  string
	proc *harness.Process
}

// StartServer runs membershipd (the binary bin) with a fresh data
// directory under a temporary directory, random loopback ports (never the
// defaults 8470/4250/6250), --bus-auth enforce, and the given store and
// JetStream sync policy, and waits until it is ready. Extra flags are
// appended. Stop removes the data directory.
func StartServer(ctx context.Context, bin, store, jsSync string, extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "unibus-bench-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "local_files")
	args := []string{
		"--bind", "127.0.0.1", "--http-port", "0", "--nats-port", "0",
		"--data-dir", data, "--bus-auth", "enforce", "--store", store,
		"--js-sync", jsSync, "--log-format", "json", "--log-level", "info",
	}
	args = append(args, noRateLimits(bin)...)
	args = append(args, extra...)
	rctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	p, err := harness.Start(rctx, bin, dir, nil, args...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, startError(ctx, store, err)
	}
	s := &Server{HTTPURL: p.HTTPURL, NATSURL: p.NATSURL, AdminIDFile: filepath.Join(data, "admin.id"),
		InternalIDFile: filepath.Join(data, "internal.id"), Store: store, JSSync: jsSync, dir: dir, proc: p}
	if _, err := os.Stat(s.AdminIDFile); err != nil {
		s.Stop()
		return nil, fmt.Errorf("membershipd --store %s bootstrapped no admin identity (%s): %w", store, s.AdminIDFile, err)
	}
	return s, nil
}

// startError says why membershipd did not get ready: a configuration it
// does not implement (ErrNotImplemented, named with its own reason), an
// exit, the caller's context, or the wait running out.
func startError(ctx context.Context, store string, err error) error {
	var nr *harness.NotReadyError
	switch {
	case !errors.As(err, &nr):
		return err
	case nr.Exited:
		out := strings.TrimSpace(nr.Output)
		if line := lineWith(out, "not implemented"); line != "" {
			return fmt.Errorf("%w: %s", ErrNotImplemented, line)
		}
		return fmt.Errorf("membershipd --store %s exited before it was ready:\n%s", store, out)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return fmt.Errorf("membershipd --store %s not ready after 90 s:\n%s", store, nr.Output)
	}
}

// lineWith returns the last line of out that contains sub, with a JSON log
// line reduced to its message and error.
func lineWith(out, sub string) string {
	found := ""
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, sub) {
			continue
		}
		found = strings.TrimSpace(l)
		var m map[string]any
		if json.Unmarshal([]byte(found), &m) == nil {
			if e, ok := m["err"].(string); ok {
				found = e
			} else if msg, ok := m["msg"].(string); ok {
				found = msg
			}
		}
		found = strings.TrimPrefix(found, "membershipd: ")
	}
	return found
}

// PID is the server's process id.
func (s *Server) PID() int { return s.proc.PID() }

// Stop terminates the server and removes its data directory.
func (s *Server) Stop() {
	s.proc.Stop()
	os.RemoveAll(s.dir)
}

// Health reads the server's /healthz (its posture says which store and
// JetStream sync policy a target runs).
func Health(ctx context.Context, hc *http.Client, base string) (wire.Health, error) {
	var h wire.Health
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/healthz", nil)
	if err != nil {
		return h, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("healthz: %w", err)
	}
	return h, nil
}

// BuildMembershipd compiles cmd/membershipd of the module rooted at root
// (CGO_ENABLED=0, as shipped) into dir and returns the binary's path.
func BuildMembershipd(ctx context.Context, root, dir string) (string, error) {
	if err := harness.BuildCommands(ctx, root, dir, "membershipd"); err != nil {
		return "", err
	}
	return filepath.Join(dir, "membershipd"), nil
}

// ModuleRoot returns the root of the unibus module containing dir, or ""
// when dir is not inside it.
func ModuleRoot(dir string) string {
	for d := dir; ; {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if strings.TrimSpace(first) == "module github.com/unibus/unibus" {
				return d
			}
			return ""
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}

// noRateLimits are the flags that turn membershipd's per-user request
// rates and quotas off, when bin has them: the bench measures what the
// server can do, and its clients are ordinary users who would otherwise
// be held to a small team's rates and quotas (an older membershipd, for a
// before/after comparison, has no such flags and no limits).
func noRateLimits(bin string) []string {
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	var flags []string
	if strings.Contains(string(out), "--user-change-rate") {
		flags = append(flags, "--user-read-rate", "0", "--user-change-rate", "0")
	}
	if strings.Contains(string(out), "--user-rooms") {
		flags = append(flags, "--user-rooms", "0", "--user-blob-bytes", "0", "--user-msg-bytes", "0", "--user-conns", "0")
	}
	if strings.Contains(string(out), "--user-daily-changes") {
		flags = append(flags, "--user-daily-changes", "0")
	}
	return flags
}

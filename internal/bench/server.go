package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/unibus/unibus/wire"
)

// ErrNotImplemented is returned by StartServer when membershipd refuses a
// configuration it does not implement yet (for example --store kv before
// that store lands): the scenario is reported as skipped, not failed.
var ErrNotImplemented = errors.New("not implemented by this membershipd")

// Server is a membershipd process the bench started (or a deployment it
// was pointed at, with no process).
type Server struct {
	HTTPURL string
	NATSURL string
	// AdminIDFile is the bootstrapped admin identity of a started server,
	// or the identity given for a target.
	AdminIDFile string
	Store       string
	JSSync      string
	pid         int

	dir    string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	pr, pw := io.Pipe()
	s := &Server{Store: store, JSSync: jsSync, AdminIDFile: filepath.Join(data, "admin.id"),
		dir: dir, cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = io.Discard
	cmd.Stderr = io.MultiWriter(pw, s.stderr)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start membershipd: %w", err)
	}
	s.pid = cmd.Process.Pid
	go func() { cmd.Wait(); pw.Close(); close(s.exited) }()
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "membershipd ready" {
				select {
				case ready <- m:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case m := <-ready:
		s.HTTPURL, _ = m["http"].(string)
		s.NATSURL, _ = m["nats"].(string)
	case <-s.exited:
		out := strings.TrimSpace(s.stderr.String())
		os.RemoveAll(dir)
		if line := lineWith(out, "not implemented"); line != "" {
			return nil, fmt.Errorf("%w: %s", ErrNotImplemented, line)
		}
		return nil, fmt.Errorf("membershipd --store %s exited before it was ready:\n%s", store, out)
	case <-time.After(90 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("membershipd --store %s not ready after 90 s:\n%s", store, s.stderr.String())
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	if _, err := os.Stat(s.AdminIDFile); err != nil {
		s.Stop()
		return nil, fmt.Errorf("membershipd --store %s bootstrapped no admin identity (%s): %w", store, s.AdminIDFile, err)
	}
	return s, nil
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

// cleanEnv is the environment without UNIBUS_* variables, so that the
// caller's settings do not leak into the bench's membershipd.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UNIBUS_") {
			env = append(env, kv)
		}
	}
	return env
}

// PID is the process id of a started server, 0 for a target.
func (s *Server) PID() int { return s.pid }

// Stop terminates a started server and removes its data directory.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
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
	out := filepath.Join(dir, "membershipd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/membershipd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/membershipd: %v\n%s", err, b)
	}
	return out, nil
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

// Package testbin builds the project's commands once per test binary and
// runs membershipd as a real process on random loopback ports, so tests can
// drive the real binaries the way an operator and a user would.
package testbin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Build compiles cmd/membershipd and cmd/unibus (CGO_ENABLED=0, as shipped)
// into a temporary directory once, and returns it.
func Build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "unibus-bin-")
		if buildErr != nil {
			return
		}
		root := moduleRoot()
		for _, cmd := range []string{"membershipd", "unibus", "clientcheck"} {
			c := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "./cmd/"+cmd)
			c.Dir = root
			c.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := c.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Bus is a membershipd process.
type Bus struct {
	Dir     string // its working directory (state under Dir/local_files)
	HTTPURL string
	NATSURL string
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	exited  chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// StartBus runs membershipd in dir with random ports and the given extra
// flags, and waits until it logs that it is ready.
func StartBus(t testing.TB, dir string, extra ...string) *Bus {
	t.Helper()
	bin := Build(t)
	args := append([]string{"--http-port", "0", "--nats-port", "0", "--log-format", "json"}, extra...)
	cmd := exec.Command(filepath.Join(bin, "membershipd"), args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	pr, pw := io.Pipe()
	b := &Bus{Dir: dir, cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = io.MultiWriter(pw, b.stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); pw.Close(); close(b.exited) }()
	t.Cleanup(func() { b.Stop(t) })
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "membershipd ready" {
				ready <- m
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case m := <-ready:
		b.HTTPURL, _ = m["http"].(string)
		b.NATSURL, _ = m["nats"].(string)
	case <-b.exited:
		t.Fatalf("membershipd exited before ready:\n%s", b.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("membershipd not ready after 60s:\n%s", b.stderr.String())
	}
	return b
}

// Stderr returns what membershipd logged so far.
func (b *Bus) Stderr() string { return b.stderr.String() }

// Stop sends SIGTERM and waits for the process to exit.
func (b *Bus) Stop(t testing.TB) {
	select {
	case <-b.exited:
		return
	default:
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(15 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
		t.Errorf("membershipd did not stop on SIGTERM")
	}
}

// cleanEnv is the environment without UNIBUS_* variables of the caller.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UNIBUS_") {
			env = append(env, kv)
		}
	}
	return env
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs a built command (membershipd or unibus) in dir with extra
// environment and optional stdin, with a timeout.
func Run(t testing.TB, dir string, env []string, stdin string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := Command(ctx, t, dir, env, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %v: %v", name, args, err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Command prepares a built command without running it.
func Command(ctx context.Context, t testing.TB, dir string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(Build(t), name), args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	return cmd
}

// Kill stops the process with SIGKILL (a crash: nothing is flushed or
// closed cleanly) and waits for it to exit.
func (b *Bus) Kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

// PID is the membershipd process id.
func (b *Bus) PID() int { return b.cmd.Process.Pid }

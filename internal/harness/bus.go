package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// readyWait bounds how long StartBus waits for membershipd to be ready.
const readyWait = 60 * time.Second

// Bus is a membershipd process a test started; it is stopped at the end of
// the test.
type Bus struct {
	*Process
}

// StartBus runs the built membershipd in dir on random loopback ports
// with JSON logs and the given extra flags, and waits until it is ready.
func StartBus(t TB, dir string, extra ...string) *Bus {
	t.Helper()
	args := append([]string{"--http-port", "0", "--nats-port", "0", "--log-format", "json"}, extra...)
	b := LaunchBus(t, filepath.Join(Build(t), "membershipd"), dir, nil, args...)
	ctx, cancel := context.WithTimeout(context.Background(), readyWait)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// LaunchBus runs bin with exactly args in dir (environment: CleanEnv plus
// env) and returns without waiting for it to be ready, for a test that
// starts membershipd the way an operator or a unit file does.
func LaunchBus(t TB, bin, dir string, env []string, args ...string) *Bus {
	t.Helper()
	p, err := Launch(bin, dir, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bus{p}
	t.Cleanup(func() { b.Stop(t) })
	return b
}

// Stop sends SIGTERM and waits for the process to exit; one that had to be
// killed is a test error.
//
// membershipd bounds its own shutdown (10 s) and logs where a close that
// did not finish waited; that line is logged here, for the record, but is
// not an error of the test: the process did stop.
func (b *Bus) Stop(t TB) {
	if err := b.Process.Stop(); err != nil {
		t.Errorf("%s: %v", b.Dir, err)
	}
	for _, l := range strings.Split(b.Output(), "\n") {
		if strings.Contains(l, "shutdown did not finish") {
			t.Logf("%s: membershipd cut its shutdown short: %s", b.Dir, l)
		}
	}
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Run runs a built command (membershipd, unibus or clientcheck) in dir
// with extra environment and stdin, within a minute.
func Run(t TB, dir string, env []string, stdin string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := Command(ctx, t, dir, env, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return Exec(t, cmd)
}

// Command prepares a built command without running it: in dir, with
// CleanEnv plus env.
func Command(ctx context.Context, t TB, dir string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(Build(t), name), args...)
	cmd.Dir = dir
	cmd.Env = append(CleanEnv(), env...)
	return cmd
}

// Exec runs a prepared command and returns its output and exit code; a
// command that cannot be run fails the test.
func Exec(t TB, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", strings.Join(cmd.Args, " "), err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

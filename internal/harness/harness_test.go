package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a TB that records failures instead of failing the test.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

func TestEventually(t *testing.T) {
	r := &recorder{TB: t}
	calls := 0
	Eventually(r, time.Minute, func() bool { calls++; return calls == 3 }, "the third call")
	if len(r.failed) != 0 || calls != 3 {
		t.Fatalf("a condition that turns true: %d calls, failures %q", calls, r.failed)
	}
	Eventually(r, 50*time.Millisecond, func() bool { return false }, "never %s", "true")
	if len(r.failed) != 1 || r.failed[0] != "never true: not within 50ms" {
		t.Fatalf("a condition that stays false: %q", r.failed)
	}
}

func TestEventuallyNoErrorReportsTheLastError(t *testing.T) {
	r := &recorder{TB: t}
	calls := 0
	EventuallyNoError(r, 50*time.Millisecond, func() error { calls++; return fmt.Errorf("attempt %d", calls) }, "a test")
	want := fmt.Sprintf("a test: not within 50ms; last: attempt %d", calls)
	if calls < 2 || len(r.failed) != 1 || r.failed[0] != want {
		t.Fatalf("%d calls, failures %q, want %q", calls, r.failed, want)
	}
}

func TestWaitChecksAtLeastOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(ctx, func() error { return nil }); err != nil {
		t.Fatalf("a condition that holds, with the context ended: %v", err)
	}
	errNo := errors.New("no")
	if err := Wait(ctx, func() error { return errNo }); err != errNo {
		t.Fatalf("a condition that does not hold, with the context ended: %v", err)
	}
}

func TestLockedBuffer(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 400 {
		t.Fatalf("%d bytes, want 400", got)
	}
}

func TestCleanEnv(t *testing.T) {
	t.Setenv("UNIBUS_SERVER", "http://192.0.2.1:8470")
	t.Setenv("HARNESS_TEST_KEEP", "1")
	env := strings.Join(CleanEnv(), "\n")
	if strings.Contains(env, "UNIBUS_") || !strings.Contains(env, "HARNESS_TEST_KEEP=1") {
		t.Fatalf("clean environment:\n%s", env)
	}
}

func TestFreePorts(t *testing.T) {
	ports := FreePorts(t, []string{"127.0.0.1"}, 9)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || defaultPorts[p] {
			t.Fatalf("ports %v: a repeat or a default", ports)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		ln.Close()
	}
}

// A started membershipd is ready (its addresses known, /healthz 200) and
// stops on SIGTERM.
func TestStartBus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts membershipd")
	}
	b := StartBus(t, t.TempDir())
	if code, _ := Health(b.HTTPURL); code != http.StatusOK || !strings.HasPrefix(b.NATSURL, "nats://127.0.0.1:") {
		t.Fatalf("healthz %d, NATS %q", code, b.NATSURL)
	}
	if err := b.Process.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Exited():
	default:
		t.Fatal("Stop returned before the process exited")
	}
	if !strings.Contains(b.Output(), readyMsg) {
		t.Errorf("output lacks the ready line:\n%s", b.Output())
	}
}

// A membershipd that refuses its flags is a NotReadyError with its
// output.
func TestStartRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts membershipd")
	}
	bin := filepath.Join(Build(t), "membershipd")
	_, err := Start(context.Background(), bin, t.TempDir(), nil, "--http-port", "0", "--nats-port", "0", "--bus-auth", "maybe")
	var nr *NotReadyError
	if !errors.As(err, &nr) || !nr.Exited || !strings.Contains(nr.Output, "--bus-auth must be enforce or off") {
		t.Fatalf("refused flags: %v", err)
	}
}

package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// stopWait is how long Stop waits after SIGTERM before it kills.
const stopWait = 15 * time.Second

// readyMsg is the message membershipd logs once it serves; with
// --log-format json its "http" and "nats" attributes are its addresses.
const readyMsg = "membershipd ready"

// Process is a membershipd process started by Launch or Start.
type Process struct {
	// Dir is its working directory; its state is under Dir/local_files
	// unless its flags say otherwise.
	Dir string
	// HTTPURL and NATSURL are the addresses it logged when it was ready;
	// they are set once WaitReady (or Start) has returned nil.
	HTTPURL, NATSURL string

	cmd    *exec.Cmd
	output LockedBuffer
	ready  chan struct{} // closed when the ready line was read
	exited chan struct{} // closed when the process is gone and its output read
}

// NotReadyError is returned by WaitReady and Start when membershipd did not
// log that it is ready: it exited first, or the context ended first (then
// it was stopped).
type NotReadyError struct {
	Exited bool   // it exited by itself
	Output string // what it wrote to stdout and stderr
	Err    error  // the context's error, when it did not exit
}

func (e *NotReadyError) Error() string {
	if e.Exited {
		return "membershipd exited before it was ready:\n" + e.Output
	}
	return fmt.Sprintf("membershipd not ready: %v:\n%s", e.Err, e.Output)
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// Launch runs bin (a membershipd) with args in dir, in the caller's
// environment without UNIBUS_* plus env, and returns without waiting for
// it to be ready. Its stdout and stderr are collected (Output); a JSON
// ready line is recognized for WaitReady.
func Launch(bin, dir string, env []string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(CleanEnv(), env...)
	p := &Process{Dir: dir, cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	pr, pw := io.Pipe()
	out := io.MultiWriter(pw, &p.output)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start membershipd: %w", err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		p.scan(pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		<-scanned
		close(p.exited)
	}()
	return p, nil
}

// scan reads the output for the ready line, then discards the rest until
// the process closes it.
func (p *Process) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == readyMsg {
			p.HTTPURL, _ = m["http"].(string)
			p.NATSURL, _ = m["nats"].(string)
			close(p.ready)
			break
		}
	}
	io.Copy(io.Discard, r)
}

// WaitReady waits until the process logs that it is ready (it must run
// with --log-format json). It returns a *NotReadyError when the process
// exits first or ctx ends first; it does not stop the process.
func (p *Process) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		select {
		case <-p.ready: // its last line
			return nil
		default:
		}
		return &NotReadyError{Exited: true, Output: p.Output()}
	case <-ctx.Done():
		return &NotReadyError{Output: p.Output(), Err: ctx.Err()}
	}
}

// Start is Launch, then WaitReady; a process that is not ready is stopped.
func Start(ctx context.Context, bin, dir string, env []string, args ...string) (*Process, error) {
	p, err := Launch(bin, dir, env, args...)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.output.String() }

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited and its output is read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM and waits for the process to exit; after 15 s it
// kills it and returns an error. A process that has exited already is not
// an error.
func (p *Process) Stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopWait):
		return fmt.Errorf("membershipd did not stop on SIGTERM within 15 s; where its goroutines were:\n%s", p.dumpAndKill())
	}
}

// dumpAndKill asks the Go runtime for every goroutine's stack (SIGQUIT),
// kills the process once it is written (or after 5 s), and returns the
// dump: what a hung shutdown waits for.
func (p *Process) dumpAndKill() string {
	before := len(p.Output())
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
	out := p.Output()
	i := strings.Index(out[before:], "goroutine ")
	if i < 0 {
		return "(no goroutine dump was written)"
	}
	// The engine's own goroutines are many and idle; ours say what hangs.
	var ours []string
	others := 0
	for _, g := range strings.Split(out[before+i:], "\n\n") {
		if strings.Contains(g, "github.com/unibus/") {
			ours = append(ours, g)
		} else {
			others++
		}
	}
	return fmt.Sprintf("%s\n(and %d goroutines outside unibus code)", strings.Join(ours, "\n\n"), others)
}

// Kill stops the process with SIGKILL (a crash: nothing is flushed or
// closed cleanly) and waits for it to exit.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// CleanEnv is the caller's environment without UNIBUS_* variables, so that
// a developer's or CI's settings do not leak into a started process.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UNIBUS_") {
			env = append(env, kv)
		}
	}
	return env
}

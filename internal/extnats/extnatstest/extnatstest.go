// Package extnatstest runs real nats-server processes for the tests of
// membershipd in front of an external NATS: the binary is built once per
// test process from the nats-server module in go.mod, and each server
// listens on free loopback ports (never membershipd's defaults) with a
// configuration file the test writes, unibus's part from
// extnats.ServerConfig.
package extnatstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/harness"
)

var built struct {
	once sync.Once
	path string
	err  error
}

// Binary builds nats-server (the version go.mod requires) once per test
// process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "unibus-nats-server-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "nats-server")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", built.path, "github.com/nats-io/nats-server/v2")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// Server is one nats-server process.
type Server struct {
	Name       string
	Host       string
	Port       int
	RoutePort  int
	Dir        string // its store and configuration
	ConfigFile string

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *harness.LockedBuffer
	exited chan struct{}
}

// URL is its client URL.
func (s *Server) URL() string {
	return "nats://" + net.JoinHostPort(s.Host, fmt.Sprint(s.Port))
}

// Output is what the current process wrote.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Cluster is a set of servers, routed to each other when more than one.
type Cluster struct{ Servers []*Server }

// URLs are the servers' client URLs, comma-separated.
func (c *Cluster) URLs() string {
	var u []string
	for _, s := range c.Servers {
		u = append(u, s.URL())
	}
	return strings.Join(u, ",")
}

// Config is what a test varies in the servers' configuration.
type Config struct {
	// Unibus is the unibus part (extnats.ServerConfig of the test's keys),
	// or anything else a test of a wrong configuration needs.
	Unibus string
	// Host is the listen address (default 127.0.0.1).
	Host string
	// Extra is appended to each server's file (e.g. a tls block).
	Extra string
}

// Start runs n servers (a cluster when n > 1) with cfg and waits until
// each accepts connections and, for a cluster, until they are routed.
// They are killed at the test's end.
func Start(t testing.TB, n int, cfg Config) *Cluster {
	t.Helper()
	Binary(t) // build before taking ports
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ports := harness.FreePorts(t, []string{host}, 2*n)
	c := &Cluster{}
	for i := range n {
		s := &Server{Name: fmt.Sprintf("n%d", i+1), Host: host, Port: ports[2*i], RoutePort: ports[2*i+1], Dir: t.TempDir()}
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		var b strings.Builder
		fmt.Fprintf(&b, "server_name: %s\nlisten: %q\n", s.Name, net.JoinHostPort(host, fmt.Sprint(s.Port)))
		fmt.Fprintf(&b, "jetstream { store_dir: %q }\n", filepath.Join(s.Dir, "js"))
		if n > 1 {
			var routes []string
			for _, o := range c.Servers {
				if o != s {
					routes = append(routes, fmt.Sprintf("%q", "nats://"+net.JoinHostPort("127.0.0.1", fmt.Sprint(o.RoutePort))))
				}
			}
			fmt.Fprintf(&b, "cluster { name: unibus-ext, listen: %q, routes: [%s] }\n",
				net.JoinHostPort("127.0.0.1", fmt.Sprint(s.RoutePort)), strings.Join(routes, ", "))
		}
		b.WriteString(cfg.Unibus)
		b.WriteString("\n")
		b.WriteString(cfg.Extra)
		s.ConfigFile = filepath.Join(s.Dir, "nats-server.conf")
		if err := os.WriteFile(s.ConfigFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.Servers {
		s.Start(t)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			s.Kill()
		}
	})
	return c
}

// Start (re)starts the server's process and waits until it accepts
// connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(Binary(t), "-c", s.ConfigFile)
	out := &harness.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.out, s.exited = cmd, out, exited
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if strings.Contains(out.String(), "Server is ready") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("nats-server %s exited:\n%s", s.Name, out.String())
		case <-ctx.Done():
			t.Fatalf("nats-server %s not ready:\n%s", s.Name, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill kills the process (SIGKILL) and waits until it is gone.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Unibus is the unibus part of a server configuration for keys.
func Unibus(k *extnats.Keys) string { return extnats.ServerConfig(k.Public()) }

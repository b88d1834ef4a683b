package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/internal/harness"
)

// no secret value — identity seeds (internal and
// admin), the route secret — appears in the logs, /healthz, /metrics or
// the argv of membershipd processes started the way the project's docs
// start them (secrets in 0600 files, never on the command line).
func TestNoSecretsInLogsHealthMetricsArgv(t *testing.T) {
	dir := t.TempDir()
	single := harness.StartBus(t, dir, "--store", "kv")

	cdir := t.TempDir()
	pass := filepath.Join(cdir, "cluster.pass")
	secret := "route-secret-4c1b9e"
	if err := os.WriteFile(pass, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clustered := harness.StartBus(t, cdir, "--store", "kv", "--cluster-name", "c", "--node-name", "n1",
		"--cluster-port", fmt.Sprint(harness.FreePort(t)), "--routes", fmt.Sprintf("nats://127.0.0.1:%d", harness.FreePort(t)),
		"--cluster-pass-file", pass)

	secrets := map[string]string{"route secret": secret}
	for name, path := range map[string]string{
		"internal seed":         filepath.Join(dir, "local_files", "internal.id"),
		"admin seed":            filepath.Join(dir, "local_files", "admin.id"),
		"cluster internal seed": filepath.Join(cdir, "local_files", "internal.id"),
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		seed := strings.TrimSpace(string(b))
		if !strings.HasPrefix(seed, "SU") {
			t.Fatalf("%s: unexpected file format", name)
		}
		secrets[name] = seed
		secrets[name+" (without prefix)"] = seed[2:20]
	}
	surfaces := map[string]string{}
	// Exercise the paths that print or log, in the admin tools and the
	// client CLI too: user add (its audit entry), audit, keygen, whoami, a
	// signed request, a bad identity file, clientcheck.
	kvArgs := []string{"--store", "kv", "--nats-url", single.NATSURL}
	userID := filepath.Join(dir, "user.id")
	admin := filepath.Join("local_files", "admin.id")
	cli := []string{"--server", single.HTTPURL, "--nats", single.NATSURL}
	// In this order: audit reads the entry user add wrote, and the last
	// whoami uses the identity keygen made.
	runs := []struct {
		name string
		argv []string
	}{
		{"user add", append([]string{"membershipd", "user", "add", "--handle", "x", "--sign-pub", strings.Repeat("ab", 32)}, kvArgs...)},
		{"audit", append([]string{"membershipd", "audit", "--json"}, kvArgs...)},
		{"keygen", []string{"unibus", "keygen", "-o", userID}},
		{"whoami", append([]string{"unibus", "--identity", admin, "whoami"}, cli...)},
		{"room create", append([]string{"unibus", "--identity", admin, "room", "create", "secrets-room"}, cli...)},
		{"bad identity", append([]string{"unibus", "--identity", filepath.Join("local_files", "internal.id") + ".nope", "whoami"}, cli...)},
		{"clientcheck", []string{"clientcheck", "-server", single.HTTPURL, "-nats", single.NATSURL, "-identity", admin, "-n", "5"}},
		{"admin as member", append([]string{"unibus", "--identity", userID, "whoami"}, cli...)},
	}
	for _, run := range runs {
		r := harness.Run(t, dir, nil, "", run.argv[0], run.argv[1:]...)
		surfaces[run.name+" output"] = r.Stdout + r.Stderr
	}
	if !strings.Contains(surfaces["audit output"], `"action":"user.add"`) || !strings.Contains(surfaces["clientcheck output"], "lost") {
		t.Fatalf("the CLI surfaces were not captured (control): %q / %q", surfaces["audit output"], surfaces["clientcheck output"])
	}
	b, err := os.ReadFile(userID)
	if err != nil {
		t.Fatal(err)
	}
	secrets["keygen's seed"] = strings.TrimSpace(string(b))

	for name, b := range map[string]*harness.Bus{"single": single, "cluster": clustered} {
		surfaces[name+" log"] = b.Output()
		for _, path := range []string{"/healthz", "/metrics"} {
			resp, err := http.Get(b.HTTPURL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			surfaces[name+" "+path] = string(body)
		}
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", b.PID()))
		if err != nil {
			t.Fatal(err)
		}
		surfaces[name+" argv"] = strings.ReplaceAll(string(argv), "\x00", " ")
	}
	if !strings.Contains(surfaces["single /metrics"], "unibus_") || !strings.Contains(surfaces["cluster argv"], "--cluster-pass-file") {
		t.Fatal("the surfaces were not captured (control)")
	}
	for sname, surface := range surfaces {
		for name, value := range secrets {
			if strings.Contains(surface, value) {
				t.Errorf("%s contains the %s", sname, name)
			}
		}
	}
}

package deploytest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/internal/harness"
)

// install.sh, against a stub systemctl and a temporary HOME: it refuses to
// install without the TLS certificate, then builds, links the unit, writes
// the drop-in and enables --now; a second run changes nothing but restarts
// the running service. The installed unit, drop-in included, passes
// systemd-analyze verify with the real binary.
func TestInstallScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds membershipd")
	}
	requireTools(t, "openssl", "systemd-analyze")
	t.Parallel()
	dir := t.TempDir()
	home, app, stubs := filepath.Join(dir, "home"), filepath.Join(dir, "app"), filepath.Join(dir, "stubs")
	log, state := filepath.Join(dir, "systemctl.log"), filepath.Join(dir, "is-active")
	writeFile(t, filepath.Join(stubs, "systemctl"), "#!/bin/sh\necho \"systemctl $*\" >>'"+log+"'\n"+
		"case \"$*\" in *is-active*) exit \"$(cat '"+state+"')\" ;; esac\nexit 0\n", 0o755)
	writeFile(t, state, "3\n", 0o644) // inactive
	env := append(goEnv(t), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"PATH="+stubs+string(os.PathListSeparator)+os.Getenv("PATH"))

	r := runScript(t, dir, env, "install.sh", "--app-dir", app)
	if r.Code == 0 || !strings.Contains(r.Stderr, "tls/generate-certs.sh") {
		t.Fatalf("install.sh without a TLS certificate: %s", r)
	}
	if c := calls(t, log); c != "" {
		t.Errorf("install.sh refused but ran %s", c)
	}

	mustRun(t, dir, nil, "tls/generate-certs.sh", "--out", filepath.Join(app, "deploy", "tls", "out"), "--no-host-names")
	r = mustRun(t, dir, env, "install.sh", "--app-dir", app)
	f, err := elf.Open(filepath.Join(app, "membershipd"))
	if err != nil {
		t.Fatalf("the built binary: %v\n%s", err, r)
	}
	f.Close()
	unitDir := filepath.Join(home, ".config", "systemd", "user")
	link, err := os.Readlink(filepath.Join(unitDir, "unibus-membershipd.service"))
	if err != nil || link != filepath.Join(deployDir(t), "unibus-membershipd.service") {
		t.Errorf("the unit link points at %q (%v)", link, err)
	}
	dropin := filepath.Join(unitDir, "unibus-membershipd.service.d", "app-dir.conf")
	for _, want := range []string{"\nWorkingDirectory=" + app + "\n", "\nExecStart=\nExecStart=" + filepath.Join(app, "membershipd") + "\n"} {
		if !strings.Contains(readFile(t, dropin), want) {
			t.Errorf("the drop-in lacks %q:\n%s", want, readFile(t, dropin))
		}
	}
	want := "systemctl --user daemon-reload\nsystemctl --user is-active --quiet unibus-membershipd.service\nsystemctl --user enable --now unibus-membershipd.service\n"
	if c := calls(t, log); c != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", c, want)
	}
	for _, want := range []string{"CGO_ENABLED=0 go build", "link:", "drop-in:", "daemon-reload", "enable --now"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("install.sh does not print %q:\n%s", want, r.Stdout)
		}
	}

	// The installed unit as systemd --user sees it: the drop-in points
	// ExecStart at the built binary (without it, %h/unibus/membershipd
	// would not exist and verify would fail).
	cmd := exec.Command("systemd-analyze", "--user", "verify", "--man=no", filepath.Join(unitDir, "unibus-membershipd.service"))
	cmd.Env = append(harness.CleanEnv(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_RUNTIME_DIR="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "unibus-membershipd") {
		t.Errorf("systemd-analyze --user verify of the installed unit: %v\n%s", err, out)
	}

	// Again, with the service running: idempotent, and a restart.
	os.Remove(log)
	writeFile(t, state, "0\n", 0o644)
	before, firstBinary := readFile(t, dropin), readFile(t, filepath.Join(app, "membershipd"))
	r = mustRun(t, dir, env, "install.sh", "--app-dir", app)
	// The same source builds the same binary; if the tree changed between
	// the runs (a concurrent edit), the old binary is kept for rollback.
	if !strings.Contains(r.Stdout, "the binary did not change") {
		if prev, err := os.ReadFile(filepath.Join(app, "membershipd.prev")); err != nil || string(prev) != firstBinary {
			t.Errorf("a rebuilt binary must keep the previous one as membershipd.prev (%v)\n%s", err, r.Stdout)
		}
	}
	if readFile(t, dropin) != before || !strings.Contains(r.Stdout, "is up to date") {
		t.Errorf("a second run rewrote the drop-in:\n%s", r.Stdout)
	}
	want = "systemctl --user daemon-reload\nsystemctl --user is-active --quiet unibus-membershipd.service\n" +
		"systemctl --user enable unibus-membershipd.service\nsystemctl --user restart unibus-membershipd.service\n"
	if c := calls(t, log); c != want {
		t.Errorf("systemctl calls of a second run:\n%s\nwant:\n%s", c, want)
	}
}

// goEnv pins the go command's caches, which default to paths under HOME:
// the test moves HOME, and must not rebuild or download everything.
func goEnv(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	v := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(v) != 3 {
		t.Fatalf("go env: %q", out)
	}
	return []string{"GOCACHE=" + v[0], "GOMODCACHE=" + v[1], "GOPATH=" + v[2]}
}

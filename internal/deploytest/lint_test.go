package deploytest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// scripts returns every shell script under deploy/ (relative paths),
// skipping generated material.
func scripts(t *testing.T) []string {
	t.Helper()
	root := deployDir(t)
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "out" || d.Name() == "build" || d.Name() == "secrets") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".sh") {
			rel, _ := filepath.Rel(root, path)
			found = append(found, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"install.sh", "tls/generate-certs.sh", "cluster/generate-cluster-certs.sh", "cluster/deploy-cluster.sh"} {
		if !slices.Contains(found, want) {
			t.Fatalf("%s is missing from deploy/ (found %v)", want, found)
		}
	}
	return found
}

// Must-show 1: shellcheck passes on every script (sourced files included,
// followed from the scripts that source them), and every runnable script
// has the project's preamble.
func TestShellcheck(t *testing.T) {
	requireTools(t, "shellcheck")
	t.Parallel()
	all := scripts(t)
	cmd := exec.Command("shellcheck", append([]string{"-x", "--severity=style"}, all...)...)
	cmd.Dir = deployDir(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("shellcheck %v: %v\n%s", all, err, out)
	}
	for _, s := range all {
		body := readFile(t, filepath.Join(deployDir(t), s))
		if strings.HasPrefix(s, "lib/") {
			if !strings.HasPrefix(body, "# shellcheck shell=bash\n") {
				t.Errorf("%s: a sourced library starts with '# shellcheck shell=bash'", s)
			}
			continue
		}
		fi, err := os.Stat(filepath.Join(deployDir(t), s))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
		if !strings.HasPrefix(body, "#!/usr/bin/env bash\n") || !strings.Contains(body, "\nset -euo pipefail\n") {
			t.Errorf("%s: want #!/usr/bin/env bash and set -euo pipefail", s)
		}
	}
}

// verifyUnit runs systemd-analyze verify on unit (a file name under dir)
// and fails on a non-zero exit or any message about the unit.
func verifyUnit(t *testing.T, dir, unit string, user bool) {
	t.Helper()
	args := []string{"verify", "--man=no", filepath.Join(dir, unit)}
	if user {
		args = append([]string{"--user"}, args...)
	}
	cmd := exec.Command("systemd-analyze", args...)
	// --user needs a runtime directory; containers and CI have none.
	rt := t.TempDir()
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt, "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze %v: %v\n%s", args, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, strings.TrimSuffix(unit, ".service")) {
			t.Errorf("systemd-analyze verify %s: %s", unit, line)
		}
	}
}

// stubUnit copies a unit into a temporary directory with its ExecStart
// binary replaced by an executable stub (systemd-analyze checks that it
// exists), and returns the directory.
func stubUnit(t *testing.T, src, binary string) string {
	t.Helper()
	dir := t.TempDir()
	stub := filepath.Join(dir, "membershipd-stub")
	writeFile(t, stub, "#!/bin/sh\nexit 0\n", 0o755)
	unit := readFile(t, src)
	if !strings.Contains(unit, "\nExecStart="+binary) {
		t.Fatalf("%s: ExecStart does not start with %s", src, binary)
	}
	unit = strings.Replace(unit, "\nExecStart="+binary, "\nExecStart="+stub, 1)
	writeFile(t, filepath.Join(dir, filepath.Base(src)), unit, 0o644)
	return dir
}

// Must-show 1: both units pass systemd-analyze verify (the binary path
// stubbed), and carry the settings the runbooks rely on.
func TestUnitsVerify(t *testing.T) {
	requireTools(t, "systemd-analyze")
	t.Parallel()
	d := deployDir(t)

	t.Run("single node user unit", func(t *testing.T) {
		src := filepath.Join(d, "unibus-membershipd.service")
		verifyUnit(t, stubUnit(t, src, "%h/unibus/membershipd"), "unibus-membershipd.service", true)
		unit := readFile(t, src)
		for _, want := range []string{"Environment=UNIBUS_BIND=0.0.0.0", "Environment=UNIBUS_TLS_CERT=deploy/tls/out/server.crt",
			"Environment=UNIBUS_TLS_KEY=deploy/tls/out/server.key", "Restart=always", "WorkingDirectory=", "WantedBy=default.target"} {
			if !strings.Contains(unit, "\n"+want) {
				t.Errorf("unibus-membershipd.service lacks %q", want)
			}
		}
		if strings.Contains(unit, "INSECURE_NO_TLS") {
			t.Error("the single-node unit must not opt out of TLS")
		}
	})

	t.Run("cluster unit", func(t *testing.T) {
		src := filepath.Join(d, "cluster", "membershipd-cluster.service")
		verifyUnit(t, stubUnit(t, src, "/opt/unibus/membershipd"), "membershipd-cluster.service", false)
		unit := readFile(t, src)
		for _, want := range []string{"EnvironmentFile=/opt/unibus/cluster.env", "WorkingDirectory=/opt/unibus", "Restart=always",
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "User=unibus"} {
			if !strings.Contains(unit, "\n"+want+"\n") {
				t.Errorf("membershipd-cluster.service lacks %q", want)
			}
		}
		args := strings.Join(execStart(t, unit, map[string]string{
			"BIND": "B", "HTTP_PORT": "1", "NATS_PORT": "2", "CLUSTER_PORT": "3", "TLS_CERT": "TC", "TLS_KEY": "TK",
			"KV_REPLICAS": "3", "DATA_DIR": "DD", "INTERNAL_ID_FILE": "IIF", "CLUSTER_NAME": "CN", "NODE_NAME": "NN",
			"ROUTES": "R", "CLUSTER_PASS_FILE": "CPF", "ROUTE_TLS_CERT": "RTC", "ROUTE_TLS_KEY": "RTK", "ROUTE_TLS_CA": "RCA",
		}), " ")
		for _, want := range []string{"--bus-auth enforce", "--store kv", "--internal-id-file IIF", "--cluster-pass-file CPF",
			"--tls-cert TC", "--route-tls-ca RCA", "--routes R", "--node-name NN"} {
			if !strings.Contains(args, want) {
				t.Errorf("ExecStart lacks %q: %s", want, args)
			}
		}
		if strings.Contains(args, "--cluster-pass ") || strings.Contains(args, "--insecure-no-tls") || strings.Contains(args, "--bus-auth off") {
			t.Errorf("ExecStart weakens the posture or puts the secret in argv: %s", args)
		}
		// The hardening still lets the service write its state: the data
		// directory and the internal identity's directory as
		// deploy-cluster.sh writes them are writable, and nothing else.
		rw := strings.Fields(strings.Join(unitDirective(t, unit, "ReadWritePaths"), " "))
		if !slices.Equal(rw, []string{"/opt/unibus/local_files", "/opt/unibus/secrets"}) {
			t.Errorf("ReadWritePaths = %v", rw)
		}
	})
}

package deploytest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// optionalEnv, when "1", turns a missing external tool into a skip.
const optionalEnv = "UNIBUS_DEPLOY_OPTIONAL"

// requireTools fails the test when a tool is missing: CI must run these
// tests. With UNIBUS_DEPLOY_OPTIONAL=1 it skips instead.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"bash"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(optionalEnv) == "1" {
				t.Skipf("%s is not installed and %s=1: skipping (.ci/install-tools installs it)", tool, optionalEnv)
			}
			t.Fatalf("%s is required by the deployment tests and is not installed: run .ci/install-tools, or set %s=1 to skip these tests", tool, optionalEnv)
		}
	}
}

// deployDir is the absolute path of deploy/ (the package directory, where
// go test runs).
func deployDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runScript runs a script of deploy/ (path relative to deploy/) with the
// caller's environment minus UNIBUS_*, plus env, from dir.
func runScript(t *testing.T, dir string, env []string, script string, args ...string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(deployDir(t), script), args...)
	cmd.Dir = dir
	cmd.Env = append(harness.CleanEnv(), env...)
	return harness.Exec(t, cmd)
}

// mustRun runs a script and fails the test unless it exits 0.
func mustRun(t *testing.T, dir string, env []string, script string, args ...string) harness.Result {
	t.Helper()
	r := runScript(t, dir, env, script, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: %s", script, strings.Join(args, " "), r)
	}
	return r
}

// node is one row of a filled-in nodes.env.
type node struct {
	name, ssh, public, wg string
}

// topology is what the tests put into nodes.env.
type topology struct {
	httpPort, natsPort, clusterPort int
	routeNetwork, bind              string
	nodes                           []node
}

// fill replaces the template's settings and NODE rows with t's values,
// keeping the rest of the file (comments, other keys) as the operator
// would.
func (top topology) fill(t *testing.T, template string) string {
	t.Helper()
	set := map[string]string{
		"HTTP_PORT":     fmt.Sprint(top.httpPort),
		"NATS_PORT":     fmt.Sprint(top.natsPort),
		"CLUSTER_PORT":  fmt.Sprint(top.clusterPort),
		"ROUTE_NETWORK": top.routeNetwork,
		"BIND":          top.bind,
	}
	var b strings.Builder
	wroteNodes := false
	for _, line := range strings.Split(template, "\n") {
		key, _, ok := strings.Cut(line, "=")
		switch {
		case ok && key == "NODE":
			if !wroteNodes {
				for _, n := range top.nodes {
					fmt.Fprintf(&b, "NODE=%s %s %s %s\n", n.name, n.ssh, n.public, n.wg)
				}
				wroteNodes = true
			}
			continue
		case ok && set[key] != "":
			fmt.Fprintf(&b, "%s=%s\n", key, set[key])
			delete(set, key)
			continue
		}
		b.WriteString(line + "\n")
	}
	if len(set) > 0 || !wroteNodes {
		t.Fatalf("the nodes.env template lacks %v (or NODE lines)", set)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// parseEnvFile reads a systemd EnvironmentFile of KEY=VALUE lines.
func parseEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		env[k] = v
	}
	return env
}

// unitDirective returns the values of a directive of a unit file, with
// continuation lines joined.
func unitDirective(t *testing.T, unit, key string) []string {
	t.Helper()
	joined := strings.ReplaceAll(unit, "\\\n", " ")
	var vals []string
	for _, line := range strings.Split(joined, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

var unitVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// execStart is the unit's ExecStart as systemd runs it: split into words,
// each ${VAR} replaced from env. A variable env lacks fails the test
// (systemd would silently pass an empty string).
func execStart(t *testing.T, unit string, env map[string]string) []string {
	t.Helper()
	lines := unitDirective(t, unit, "ExecStart")
	if len(lines) != 1 {
		t.Fatalf("want one ExecStart, got %q", lines)
	}
	if strings.ContainsAny(lines[0], `"'`) {
		t.Fatalf("ExecStart uses quoting this test does not parse: %s", lines[0])
	}
	var args []string
	for _, w := range strings.Fields(lines[0]) {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			t.Fatalf("ExecStart word %q: use ${VAR} (one word), not $VAR (split on blanks)", w)
		}
		w = unitVar.ReplaceAllStringFunc(w, func(m string) string {
			name := unitVar.FindStringSubmatch(m)[1]
			v, ok := env[name]
			if !ok {
				t.Fatalf("ExecStart uses ${%s}, which cluster.env does not set", name)
			}
			return v
		})
		args = append(args, w)
	}
	return args
}

// fileState is what a snapshot records of one path.
type fileState struct {
	mode    fs.FileMode
	modTime time.Time
	digest  string
}

// snapshot records every file and directory under root, skipping the
// directories in skip (absolute paths).
func snapshot(t *testing.T, root string, skip ...string) map[string]fileState {
	t.Helper()
	snap := map[string]fileState{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if path == s {
				return filepath.SkipDir
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: info.Mode(), modTime: info.ModTime()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			st.digest = hex.EncodeToString(sum[:])
		}
		snap[path] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// diffSnapshots lists what changed between two snapshots.
func diffSnapshots(before, after map[string]fileState) []string {
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, "removed "+p)
		case a != b:
			diffs = append(diffs, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "created "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// stubTools puts executables named tools first on PATH; each records its
// arguments in the returned log file and exits with code. It returns the
// PATH entry for the environment and the log path.
func stubTools(t *testing.T, code int, tools ...string) (pathEnv, logFile string) {
	t.Helper()
	dir := t.TempDir()
	logFile = filepath.Join(dir, "calls.log")
	for _, tool := range tools {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >>'%s'\nexit %d\n", tool, logFile, code)
		writeFile(t, filepath.Join(dir, tool), script, 0o755)
	}
	return "PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"), logFile
}

// calls returns the lines a stub logged ("" when none ran).
func calls(t *testing.T, logFile string) string {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mode is a file's permission bits.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// randomHex is 32 random bytes in hex: a route secret, as the runbook
// makes it.
func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

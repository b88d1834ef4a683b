package deploytest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// The runbook's steps as an operator types them on a node, run by
// TestRehearsal: /opt/unibus in a command stands for the node's rehearsal
// directory, and nothing else is changed.

// runbookFirstAdmin is the runbook's first-admin bootstrap, verbatim: a
// temporary loopback server on the node's store and migrate-to-kv. The
// rehearsal runs it as root on a staged, never-started node.
const runbookFirstAdmin = "testdata/runbook-first-admin.sh"

// onNode rewrites a runbook command for the rehearsal node whose app
// directory is app.
func onNode(cmd, app string) string {
	return strings.ReplaceAll(cmd, "/opt/unibus", app)
}

// portsFree fails the test when a runbook step's fixed port is taken: the
// temporary server of the first-admin bootstrap listens on 127.0.0.1:8470
// and :4250, as written.
func portsFree(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("the runbook's temporary server needs %s, which is in use: %v", a, err)
		}
		l.Close()
	}
}

// runFirstAdminBootstrap runs the runbook's bootstrap with bash, as
// `ssh root@node 'bash -s' <<'SEED'` does, in app for the admin adminPub.
// It returns the script's output and the temporary server's log.
func runFirstAdminBootstrap(t *testing.T, app, adminPub string) (harness.Result, string) {
	t.Helper()
	portsFree(t, "127.0.0.1:8470", "127.0.0.1:4250")
	bootLog := filepath.Join(t.TempDir(), "seed-boot.log")
	script := onNode(readFile(t, runbookFirstAdmin), app)
	script = strings.ReplaceAll(script, "<ADMIN_SIGN_PUB_HEX>", adminPub)
	script = strings.ReplaceAll(script, "/tmp/seed-boot.log", bootLog)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-s")
	cmd.Dir = t.TempDir() // ssh lands in the login's home
	cmd.Env = harness.CleanEnv()
	cmd.Stdin = strings.NewReader(script)
	r := harness.Exec(t, cmd)
	b, _ := os.ReadFile(bootLog)
	return r, string(b)
}

// installNode runs a node's install-node.sh, as deploy-cluster.sh --yes
// runs it over ssh, against app: in a private mount namespace where app is
// mounted on /opt/unibus and a scratch directory on /etc/systemd/system,
// with a stub systemctl. The unibus system user it creates is real. Root
// only.
func installNode(t *testing.T, app, script string) harness.Result {
	t.Helper()
	path, _ := stubTools(t, 0, "systemctl")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "bash", "-euc", `
mount -t tmpfs unibus-rehearsal /opt
mkdir /opt/unibus
mount --bind "$1" /opt/unibus
mount -t tmpfs unibus-rehearsal /etc/systemd/system
sh -s <"$2"`, "install-node", app, script)
	cmd.Env = append(harness.CleanEnv(), path)
	return harness.Exec(t, cmd)
}

// asUser is argv run as user and group (no other groups), as systemd's
// User= or an unprivileged login runs it.
func asUser(user, group string, argv ...string) []string {
	return append([]string{"setpriv", "--reuid", user, "--regid", group, "--clear-groups", "--"}, argv...)
}

// opened makes each directory from dir up to (not including) stop
// traversable by other users: the test's temporary directories are 0700,
// /opt is not.
func opened(t *testing.T, dir, stop string) {
	t.Helper()
	for d := dir; d != stop && d != filepath.Dir(d); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// findFiles lists the files named name under root.
func findFiles(t *testing.T, root, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == name {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

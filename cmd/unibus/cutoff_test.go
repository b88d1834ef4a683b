package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// TestCutOffListenerExits: a `unibus listen` whose user is removed from
// the room, or revoked, exits with status 4 and a message that says so,
// instead of reconnecting (and logging refused logins) forever.
func TestCutOffListenerExits(t *testing.T) {
	dir := t.TempDir()
	bus := harness.StartBus(t, dir)
	env := []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + bus.NATSURL}
	admin := append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, "local_files", "admin.id"))
	users := map[string][]string{}
	run := func(env []string, args ...string) harness.Result {
		t.Helper()
		return unibusOK(t, dir, env, args...)
	}
	run(admin, "room", "create", "ops")
	for _, u := range []string{"bob", "carol"} {
		users[u] = append(env, "UNIBUS_IDENTITY="+filepath.Join(dir, u+".id"))
		signPub := strings.TrimSpace(run(env, "keygen", "-o", filepath.Join(dir, u+".id")).Stdout)
		run(admin, "user", "add", "--handle", u, "--sign-pub", signPub)
		run(users[u], "register")
		run(admin, "room", "add", "ops", u)
	}
	for _, c := range []struct {
		user, want string
		cut        []string
	}{
		{"bob", "no longer a member of the room", []string{"room", "remove", "ops", "bob"}},
		{"carol", "revoked", []string{"user", "revoke", "carol"}},
	} {
		t.Run(c.user, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			listen := harness.Command(ctx, t, dir, users[c.user], "unibus", "listen", "ops")
			var lout, lerr harness.LockedBuffer
			listen.Stdout, listen.Stderr = &lout, &lerr
			if err := listen.Start(); err != nil {
				t.Fatal(err)
			}
			// The listener is up once a message sent now reaches it.
			harness.Eventually(t, 30*time.Second, func() bool {
				run(admin, "send", "ops", "ping")
				return strings.Contains(lout.String(), "ping")
			}, "%s's listener receiving", c.user)
			cutAt := time.Now()
			run(admin, c.cut...)
			err := listen.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitCutOff {
				t.Fatalf("listen after %v: %v, want exit %d\nstderr: %s", c.cut, err, exitCutOff, lerr.String())
			}
			if !strings.Contains(lerr.String(), c.want) {
				t.Errorf("listen's message %q does not say %q", lerr.String(), c.want)
			}
			if n := bytes.Count([]byte(lerr.String()), []byte("\n")); n > 10 {
				t.Errorf("listen logged %d lines before it stopped:\n%s", n, lerr.String())
			}
			t.Logf("%s's listener stopped %v after %v", c.user, time.Since(cutAt).Round(time.Millisecond), c.cut)
		})
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// Against a real membershipd, every message arrives exactly once: exit 0,
// the report line, and the same counts as JSON.
func TestLiveDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	dir := t.TempDir()
	b := harness.StartBus(t, dir)
	admin := filepath.Join(dir, "local_files", "admin.id")
	args := []string{"-server", b.HTTPURL, "-nats", b.NATSURL, "-identity", admin, "-n", "30", "-rate", "200", "-drain", "30s"}

	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	line := regexp.MustCompile(`^room [0-9a-f]{32}: sent 30 received 30 lost 0 duplicated 0 unexpected 0 longest_gap \S+ \(after #\d+\) elapsed \S+ send_retries 0\n$`)
	if !line.MatchString(out.String()) {
		t.Errorf("report line %q", out.String())
	}

	out.Reset()
	if code := run(append(args, "-json"), &out, &errb); code != 0 {
		t.Fatalf("-json: exit %d\n%s%s", code, out.String(), errb.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("-json printed %q: %v", out.String(), err)
	}
	if rep.Sent != 30 || rep.Received != 30 || rep.Lost != 0 || rep.Duplicated != 0 || rep.Unexpected != 0 || len(rep.Room) != 32 {
		t.Errorf("report %+v", rep)
	}
}

// A message sent into clientcheck's room by someone else — one of its
// numbers again and something else — is reported as a duplicate and as
// unexpected, and fails the check.
func TestLiveDeploymentReportsIntruders(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	dir := t.TempDir()
	b := harness.StartBus(t, dir)
	admin := filepath.Join(dir, "local_files", "admin.id")
	id, err := identity.Load(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Another client of the same user: it finds clientcheck's room and
	// sends into it while clientcheck runs.
	other, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{b.HTTPURL}, NATS: []string{b.NATSURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	intruded := make(chan error, 1)
	go func() {
		intruded <- harness.Wait(ctx, func() error {
			rooms, err := other.ListRooms(ctx)
			if err != nil {
				return err
			}
			for _, r := range rooms {
				if strings.HasPrefix(r.Name, "clientcheck-") {
					for _, data := range []string{"1", "not a number"} {
						if _, err := other.Send(ctx, r.ID, "check", []byte(data)); err != nil {
							return err
						}
					}
					return nil
				}
			}
			return context.DeadlineExceeded
		})
	}()

	var out, errb bytes.Buffer
	code := run([]string{"-server", b.HTTPURL, "-nats", b.NATSURL, "-identity", admin, "-n", "100", "-rate", "20", "-drain", "30s", "-json"}, &out, &errb)
	if err := <-intruded; err != nil {
		t.Fatalf("send into clientcheck's room: %v", err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("-json printed %q: %v\n%s", out.String(), err, errb.String())
	}
	if code != 1 || rep.Sent != 100 || rep.Lost != 0 || rep.Duplicated != 1 || rep.Unexpected != 1 || rep.Received != 101 {
		t.Errorf("exit %d, report %+v, want exit 1 with one duplicate and one unexpected message\n%s", code, rep, errb.String())
	}
}

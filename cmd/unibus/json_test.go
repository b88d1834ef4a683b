package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// TestJSONIsTheAPIBody: what --json prints for a user or a room is the
// control plane's JSON for it, field for field, as a signed GET of the
// same resource answers it (decoded and encoded again, as a client that
// printed the body would). Rooms have a maximum age here, so that it is
// set; a room made by `unibus room create` asks for no byte limit, so it
// is in the shared stream.
func TestJSONIsTheAPIBody(t *testing.T) {
	dir := t.TempDir()
	bus := harness.StartBus(t, dir, "--room-max-age", "90m")
	env := []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + bus.NATSURL}
	adminFile := filepath.Join(dir, "local_files", "admin.id")
	admin := append(env[:len(env):len(env)], "UNIBUS_IDENTITY="+adminFile)
	bobFile := filepath.Join(dir, "bob.id")
	bob := append(env[:len(env):len(env)], "UNIBUS_IDENTITY="+bobFile)
	run := func(env []string, args ...string) string {
		t.Helper()
		r := harness.Run(t, dir, env, "", "unibus", append([]string{"--json"}, args...)...)
		if r.Code != 0 {
			t.Fatalf("unibus %v: exit %d\nstdout: %s\nstderr: %s", args, r.Code, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}
	adminID, err := identity.Load(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	// Signed as the SDK signs: for the deployment /healthz announces.
	_, health := harness.Health(bus.HTTPURL)
	if health.Protocol != wire.Protocol || health.Deployment == "" {
		t.Fatalf("healthz: protocol %q, deployment %q", health.Protocol, health.Deployment)
	}
	signer := &httpsig.Signer{KeyID: adminID.SignPub().String(), Key: adminID.SigningKey(), Tag: wire.DeploymentTag(health.Deployment)}
	// get returns the body of a signed GET by the admin, decoded into v
	// and encoded again; pick, when set, takes a part of v to encode.
	get := func(path string, v any, pick func() any) string {
		t.Helper()
		req, err := http.NewRequest("GET", bus.HTTPURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := signer.Sign(req, nil); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
		if pick != nil {
			v = pick()
		}
		var b bytes.Buffer
		json.NewEncoder(&b).Encode(v)
		return b.String()
	}
	same := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s --json printed\n%s\nthe API answers\n%s", what, got, want)
		}
	}
	// created compares what a command that creates a record printed, in
	// the shape of v, with the record read back: the store keeps times to
	// the microsecond, the answer to the creating request has them to the
	// nanosecond.
	created := func(what, got string, v any, at *time.Time, want string) {
		t.Helper()
		if err := json.Unmarshal([]byte(got), v); err != nil {
			t.Fatalf("%s --json printed %q: %v", what, got, err)
		}
		var b bytes.Buffer
		json.NewEncoder(&b).Encode(v)
		same(what+" (shape)", got, b.String())
		*at = at.Truncate(time.Microsecond)
		b.Reset()
		json.NewEncoder(&b).Encode(v)
		same(what, b.String(), want)
	}

	var keygen struct {
		SignPub string `json:"sign_pub"`
	}
	if err := json.Unmarshal([]byte(run(env, "keygen", "-o", bobFile)), &keygen); err != nil {
		t.Fatal(err)
	}
	var u wire.User
	created("user add", run(admin, "user", "add", "--handle", "bob", "--sign-pub", keygen.SignPub), &u, &u.CreatedAt, get("/v1/users/bob", new(wire.User), nil))
	same("register", run(bob, "register"), get("/v1/users/bob", new(wire.User), nil))
	same("whoami", run(admin, "whoami"), get("/v1/me", new(wire.User), nil))
	same("user show", run(admin, "user", "show", "bob"), get("/v1/users/bob", new(wire.User), nil))
	var ul wire.UserList
	same("user list", run(admin, "user", "list"), get("/v1/users", &ul, func() any { return ul.Users }))

	var room wire.Room
	out := run(admin, "room", "create", "demo")
	if err := json.Unmarshal([]byte(out), &room); err != nil || len(room.ID) != 32 {
		t.Fatalf("room create printed %q", out)
	}
	var ri wire.RoomInfo
	created("room create", out, &room, &room.CreatedAt, get("/v1/rooms/"+room.ID, &ri, func() any { return ri.Room }))
	if ri.Room.MaxAgeSeconds != 90*60 || ri.Room.MaxBytes != 0 || !ri.Room.Shared {
		t.Fatalf("the room is not a shared room with the server's maximum age: %+v", ri.Room)
	}
	run(admin, "room", "add", "demo", "bob")
	same("room rotate", run(admin, "room", "rotate", "demo"), get("/v1/rooms/"+room.ID, &ri, func() any { return ri.Room }))
	same("room info", run(admin, "room", "info", "demo"), get("/v1/rooms/"+room.ID, new(wire.RoomInfo), nil))
	var rl wire.RoomList
	same("room list", run(admin, "room", "list"), get("/v1/rooms", &rl, func() any { return rl.Rooms }))
	same("user revoke", run(admin, "user", "revoke", "bob"), get("/v1/users/bob", new(wire.User), nil))
	if !strings.Contains(run(admin, "user", "show", "bob"), `"status":"revoked"`) {
		t.Error("user show after revoke does not say revoked")
	}
}

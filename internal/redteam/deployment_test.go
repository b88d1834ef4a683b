package redteam

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/wire"
)

// deploymentAttacks: a request signed for one deployment is refused by
// another where the same key is registered. A second membershipd (B)
// starts with a copy of this one's bootstrapped admin identity, so the
// admin's key is an admin on both; alice's key is added to B as well.
// Every request signed for A (this deployment) and sent to B must be 401
// wrong_deployment, and leave B's state as it was. add is the admin
// CLI's POST /v1/users captured in H01.
func (e *env) deploymentAttacks(rep *Report, add captured) {
	dirB := e.t.TempDir()
	if err := os.MkdirAll(filepath.Join(dirB, "local_files"), 0o700); err != nil {
		e.t.Fatal(err)
	}
	seed, err := os.ReadFile(e.admin.idFile)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "local_files", "admin.id"), seed, 0o600); err != nil {
		e.t.Fatal(err)
	}
	busB, _ := e.startBus(dirB, e.cert, e.key)
	defer busB.Stop(e.t)
	depB := e.deploymentOf(busB.HTTPURL)
	tagB := wire.DeploymentTag(depB)
	e.norm.add(depB, "{deployment B}")

	row := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "HTTP", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	// judge: 401 wrong_deployment and B unchanged.
	judge := func(c httpResult, changed string) (Verdict, string) {
		switch {
		case changed != "" || c.status/100 == 2:
			return FailOpen, c.outcome() + "; " + orNone(changed)
		case c.outcome() == "401 wrong_deployment":
			return Pass, c.outcome() + "; B unchanged"
		default:
			return FailDenial, c.outcome()
		}
	}

	// H80 (control): the admin's key is an admin of B too, and alice's
	// key is registered there by it.
	var me wire.User
	st, _ := e.apiAt(busB.HTTPURL, tagB, e.admin, "GET", "/v1/me", nil, &me)
	body, _ := json.Marshal(wire.AddUserRequest{Handle: "alice", SignPub: e.alice.hex, Role: "member"})
	st2, _ := e.apiAt(busB.HTTPURL, tagB, e.admin, "POST", "/v1/users", body, nil)
	v := Pass
	if st != http.StatusOK || me.SignPub != e.admin.hex || me.Role != "admin" || st2 != http.StatusCreated {
		v = FailControl
	}
	row("H80", "control: a second membershipd (deployment B) bootstrapped with a copy of the admin's identity file; the admin adds alice there",
		"Go net/http (signed for B)", "allowed: the same keys are registered on both deployments",
		v, fmt.Sprintf("GET /v1/me %d (role %s); POST /v1/users %d", st, me.Role, st2))

	// H81: the admin CLI's captured request, replayed to B.
	c := e.curl("POST", busB.HTTPURL+"/v1/users", requestHeaders(add.header, true), add.body)
	v, obs := judge(c, present(e.userExistsAt(busB.HTTPURL, tagB, "carol"), "carol was registered on B"))
	row("H81", "replay to deployment B the admin CLI's captured `POST /v1/users` (signed for A)", "curl",
		"401 wrong_deployment; carol not registered on B", v, obs)

	// H82: a fresh request signed for A, sent to B.
	body = addUserBody("rt-h82")
	c = e.curl("POST", busB.HTTPURL+"/v1/users", e.signedHeaders(e.admin, nil, "POST", "/v1/users", body, nil), body)
	v, obs = judge(c, present(e.userExistsAt(busB.HTTPURL, tagB, "rt-h82"), "rt-h82 was registered on B"))
	row("H82", "a fresh admin request signed for deployment A, sent to B", "curl", "401 wrong_deployment; nothing registered on B", v, obs)

	// H83: alice's room creation signed for A, sent to B where her key is
	// registered.
	rid, _ := e2e.NewRoomID()
	body = e.createRoomBody(e.alice, rid.String(), "cross", 0, 0)
	c = e.curl("POST", busB.HTTPURL+"/v1/rooms", e.signedHeaders(e.alice, nil, "POST", "/v1/rooms", body, nil), body)
	var rooms wire.RoomList
	stR, _ := e.apiAt(busB.HTTPURL, tagB, e.alice, "GET", "/v1/rooms", nil, &rooms)
	v, obs = judge(c, present(stR != http.StatusOK || len(rooms.Rooms) > 0, fmt.Sprintf("alice's rooms on B: %d (%d)", len(rooms.Rooms), stR)))
	row("H83", "alice's `POST /v1/rooms` signed for deployment A, sent to B (her key is registered on both)", "curl",
		"401 wrong_deployment; no room on B", v, obs)

	// H84, H85: signatures of protocol 1 clients.
	for _, at := range []struct{ id, attack, tag string }{
		{"H84", "a request signed without a deployment tag (as a protocol 1 client signs)", ""},
		{"H85", "a request whose tag names protocol 1 (`unibus/1/{deployment}`)", "unibus/1/" + e.deployment},
	} {
		handle := "rt-" + strings.ToLower(at.id)
		body := addUserBody(handle)
		c := e.curl("POST", e.bus.HTTPURL+"/v1/users", e.taggedHeaders(e.admin, nil, at.tag, "POST", "/v1/users", body, nil), body)
		v, obs := judge(c, present(e.userExists(handle), handle+" was registered"))
		if v == Pass {
			obs = c.outcome() + "; nothing registered"
		}
		row(at.id, at.attack, "curl", "401 wrong_deployment (\"upgrade the client\"); nothing registered", v, obs)
	}
}

// present returns what when b holds, else "".
func present(b bool, what string) string {
	if b {
		return what
	}
	return ""
}

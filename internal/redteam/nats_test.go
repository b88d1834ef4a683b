package redteam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// Request timeouts of the nats CLI: attacks wait for answers that never
// come (the refusal arrives at once), controls must not time out on a
// loaded CI machine.
const (
	attackTimeout  = "2s"
	controlTimeout = "10s"
)

// natsArgs are the connection flags of the nats CLI acting as u (nil: no
// credentials), with the attack timeout unless args set another. The seed
// stays in its 0600 file; only the path is on argv.
func (e *env) natsArgs(u *user, args ...string) []string {
	base := []string{"--no-context", "-s", e.bus.NATSURL, "--tlsca", e.caCrt}
	if !slices.Contains(args, "--timeout") {
		base = append(base, "--timeout", attackTimeout)
	}
	if u != nil {
		base = append(base, "--nkey", u.idFile, "--inbox-prefix", subjects.InboxPrefix(u.hex))
	}
	return append(base, args...)
}

// natsCLI runs the nats CLI as u.
func (e *env) natsCLI(u *user, timeout time.Duration, args ...string) result {
	return e.run(timeout, nil, e.tl.nats, e.natsArgs(u, args...)...)
}

var violation = regexp.MustCompile(`(Permissions Violation for (?:Publish|Subscription) to "[^"]*"|Authorization Violation)`)

// natsAttack is one thing the data plane must refuse to a member.
type natsAttack struct {
	id, attack string
	as         *user // nil: no credentials
	args       []string
	deny       string        // the refusal the server must send: `Publish to "…"`, `Subscription to "…"` or "Authorization Violation"
	expect     string        // the expected denial, for the table
	intact     func() string // "" when the server's state is as before; else what changed
}

// Expected denials of a member's data-plane connection.
const (
	noJetStream = "not in the allow list (a member publishes only on its ingress and `$JS.FC.>`); its account has no JetStream"
	notAllowed  = "not in the allow list"
	onlyOwnSubs = "not in the allow list (a member subscribes only to `_INBOX_{self}.>` and `unibus.dlv.{self}.>`)"
)

// natsAttacks is every subject class the data plane must deny to a
// member, tried by alice (member of room A) with the nats CLI. Protocol 1
// gave members parts of the JetStream API; protocol 2 gives them none, so
// every one of these is refused by the server's permissions.
func (e *env) natsAttacks(bobs consumer) []natsAttack {
	shared, BD := subjects.SharedStream, subjects.Stream(e.roomBD)
	histA, histB, histBD := e.history(e.roomA), e.history(e.roomB), e.history(e.roomBD)
	sharedCfg := e.streamConfig(shared)
	unchanged := func(room string, before []string) func() string {
		return func() string {
			if after := e.history(room); !slices.Equal(after, before) {
				return fmt.Sprintf("room %s went from %d to %d messages", room, len(before), len(after))
			}
			return ""
		}
	}
	noStream := func(name string) func() string {
		return func() string {
			if e.streamExists(name) {
				return "stream " + name + " exists"
			}
			return ""
		}
	}
	keepsListener := func() string {
		if _, ok := e.consumerState(shared, bobs.Name); !ok {
			return "bob's listener is gone"
		}
		return ""
	}
	noConsumer := func(stream, name string) func() string {
		return func() string {
			if _, ok := e.consumerState(stream, name); ok {
				return "consumer " + name + " was created"
			}
			return ""
		}
	}
	sameShared := func() string {
		if e.streamConfig(shared) != sharedCfg {
			return shared + "'s configuration changed"
		}
		return unchanged(e.roomA, histA)()
	}
	pub := func(s string) string { return `Publish to "` + s + `"` }
	sub := func(s string) string { return `Subscription to "` + s + `"` }
	a, bobInbox := e.alice, subjects.InboxPrefix(e.bob.hex)
	consumerReq := `{"stream_name":"` + shared + `","config":{"name":"spy","durable_name":"spy","ack_policy":"explicit","filter_subject":"` + subjects.SharedRoom(e.roomB) + `"}}`
	return []natsAttack{
		{id: "N10", attack: "create a stream capturing its own room's stored subjects", as: a,
			args: []string{"stream", "add", "EVIL", "--subjects", subjects.SharedRoom(e.roomA), "--defaults"},
			deny: pub("$JS.API.STREAM.CREATE.EVIL"), expect: noJetStream + "; no stream EVIL", intact: noStream("EVIL")},
		{id: "N11", attack: "delete the shared room stream", as: a, args: []string{"stream", "rm", shared, "-f"},
			deny: pub("$JS.API.STREAM.DELETE." + shared), expect: noJetStream + "; stream and history kept", intact: unchanged(e.roomA, histA)},
		{id: "N12", attack: "purge its own room's messages", as: a, args: []string{"stream", "purge", shared, "--subject", subjects.SharedRoom(e.roomA), "-f"},
			deny: pub("$JS.API.STREAM.INFO." + shared), expect: noJetStream + "; messages kept", intact: unchanged(e.roomA, histA)},
		{id: "N13", attack: "shorten the shared stream's retention (update)", as: a, args: []string{"stream", "edit", shared, "--max-age", "1s", "-f"},
			deny: pub("$JS.API.STREAM.INFO." + shared), expect: noJetStream + "; configuration unchanged", intact: sameShared},
		{id: "N14", attack: "delete a message of its own room", as: a, args: []string{"stream", "rmm", shared, "1", "-f"},
			deny: pub("$JS.API.STREAM.INFO." + shared), expect: noJetStream + "; messages kept", intact: unchanged(e.roomA, histA)},
		{id: "N15", attack: "delete another room's own stream", as: a, args: []string{"stream", "rm", BD, "-f"},
			deny: pub("$JS.API.STREAM.DELETE." + BD), expect: noJetStream + "; stream kept", intact: unchanged(e.roomBD, histBD)},
		{id: "N16", attack: "read the shared stream's info", as: a, args: []string{"stream", "info", shared},
			deny: pub("$JS.API.STREAM.INFO." + shared), expect: noJetStream},
		{id: "N17", attack: "get a message of another room", as: a,
			args: []string{"request", "$JS.API.STREAM.MSG.GET." + shared, `{"last_by_subj":"` + subjects.Shared(e.roomB, subjects.DefaultTopic) + `"}`},
			deny: pub("$JS.API.STREAM.MSG.GET." + shared), expect: noJetStream},
		{id: "N18", attack: "direct-get a message of another room", as: a,
			args: []string{"request", "$JS.API.DIRECT.GET." + shared, `{"last_by_subj":"` + subjects.Shared(e.roomB, subjects.DefaultTopic) + `"}`},
			deny: pub("$JS.API.DIRECT.GET." + shared), expect: noJetStream},
		{id: "N19", attack: "create a consumer on another room's messages", as: a,
			args: []string{"request", "$JS.API.CONSUMER.CREATE." + shared + ".spy", consumerReq},
			deny: pub("$JS.API.CONSUMER.CREATE." + shared + ".spy"), expect: noJetStream + "; no consumer", intact: noConsumer(shared, "spy")},
		{id: "N20", attack: "create a durable on another room's messages (legacy API)", as: a,
			args: []string{"request", "$JS.API.CONSUMER.DURABLE.CREATE." + shared + ".spy", consumerReq},
			deny: pub("$JS.API.CONSUMER.DURABLE.CREATE." + shared + ".spy"), expect: noJetStream + "; no consumer", intact: noConsumer(shared, "spy")},
		{id: "N21", attack: "pull from another member's listener", as: a,
			args: []string{"request", "$JS.API.CONSUMER.MSG.NEXT." + shared + "." + bobs.Name, `{"batch":1,"no_wait":true}`},
			deny: pub("$JS.API.CONSUMER.MSG.NEXT." + shared + "." + bobs.Name), expect: noJetStream},
		{id: "N22", attack: "delete another member's listener", as: a, args: []string{"consumer", "rm", shared, bobs.Name, "-f"},
			deny: pub("$JS.API.CONSUMER.DELETE." + shared + "." + bobs.Name), expect: noJetStream + "; listener kept", intact: keepsListener},
		{id: "N23", attack: "write a control-plane KV key (nats kv put)", as: a, args: []string{"kv", "put", "UNIBUS_users", "evil", "admin"},
			deny: pub("$JS.API.STREAM.INFO.KV_UNIBUS_users"), expect: noJetStream + " (and the buckets live in a third account)"},
		{id: "N24", attack: "publish to a KV subject", as: a, args: []string{"pub", "$KV.UNIBUS_users.evil", "admin"},
			deny: pub("$KV.UNIBUS_users.evil"), expect: notAllowed},
		{id: "N25", attack: "create a KV bucket (stream KV_evil)", as: a,
			args: []string{"request", "$JS.API.STREAM.CREATE.KV_evil", `{"name":"KV_evil","subjects":["$KV.evil.>"]}`},
			deny: pub("$JS.API.STREAM.CREATE.KV_evil"), expect: noJetStream, intact: noStream("KV_evil")},
		{id: "N26", attack: "write the blob object store (nats object put)", as: a, args: []string{"object", "put", "UNIBUS_blobs", e.caCrt},
			deny: pub("$JS.API.STREAM.INFO.OBJ_UNIBUS_blobs"), expect: noJetStream},
		{id: "N27", attack: "publish to an object-store subject", as: a, args: []string{"pub", "$O.UNIBUS_blobs.C.evil", "x"},
			deny: pub("$O.UNIBUS_blobs.C.evil"), expect: notAllowed},
		{id: "N28", attack: "list every stream", as: a, args: []string{"stream", "ls"},
			deny: pub("$JS.API.STREAM.LIST"), expect: noJetStream},
		{id: "N29", attack: "read the JetStream account", as: a, args: []string{"request", "$JS.API.INFO", ""},
			deny: pub("$JS.API.INFO"), expect: noJetStream},
		{id: "N30", attack: "subscribe to another user's inbox", as: a, args: []string{"sub", bobInbox + ".>", "--count", "1"},
			deny: sub(bobInbox + ".>"), expect: onlyOwnSubs},
		{id: "N31", attack: "publish into another user's inbox", as: a, args: []string{"pub", bobInbox + ".x", "forged reply"},
			deny: pub(bobInbox + ".x"), expect: notAllowed},
		{id: "N32", attack: "subscribe to every default inbox", as: a, args: []string{"sub", "_INBOX.>", "--count", "1"},
			deny: sub("_INBOX.>"), expect: onlyOwnSubs},
		{id: "N33", attack: "ping the servers ($SYS)", as: a, args: []string{"server", "ping"},
			deny: pub("$SYS.REQ.SERVER.PING"), expect: notAllowed},
		{id: "N34", attack: "subscribe to system events", as: a, args: []string{"sub", "$SYS.>", "--count", "1"},
			deny: sub("$SYS.>"), expect: onlyOwnSubs},
		{id: "N35", attack: "list connections ($SYS CONNZ)", as: a, args: []string{"request", "$SYS.REQ.SERVER.PING.CONNZ", ""},
			deny: pub("$SYS.REQ.SERVER.PING.CONNZ"), expect: notAllowed},
		{id: "N36", attack: "durable push consumer on its own room delivering to its own inbox (the protocol 1 way to keep reading after a removal)", as: a,
			args: []string{"request", "$JS.API.CONSUMER.CREATE." + shared + ".mine", pushReq("mine", subjects.InboxPrefix(a.hex)+".spy", subjects.SharedRoom(e.roomA))},
			deny: pub("$JS.API.CONSUMER.CREATE." + shared + ".mine"), expect: noJetStream + "; no consumer", intact: noConsumer(shared, "mine")},
		{id: "N37", attack: "push consumer on its own room delivering into another room (nats-server#8274)", as: a,
			args: []string{"request", "$JS.API.CONSUMER.CREATE." + shared + ".push", pushReq("push", subjects.Shared(e.roomB, "chat"), subjects.SharedRoom(e.roomA))},
			deny: pub("$JS.API.CONSUMER.CREATE." + shared + ".push"), expect: noJetStream + "; nothing reaches room B", intact: unchanged(e.roomB, histB)},
		{id: "N40", attack: "publish on another room's stored subject", as: a, args: []string{"pub", subjects.Shared(e.roomB, "forged"), "intrusion"},
			deny: pub(subjects.Shared(e.roomB, "forged")), expect: notAllowed + "; nothing stored", intact: unchanged(e.roomB, histB)},
		{id: "N41", attack: "publish on another room's own stream subject, with a JetStream ack", as: a,
			args: []string{"pub", "--jetstream", subjects.RoomTopic(e.roomBD, "forged"), "intrusion"},
			deny: pub(subjects.RoomTopic(e.roomBD, "forged")), expect: notAllowed + "; nothing stored", intact: unchanged(e.roomBD, histBD)},
		{id: "N42", attack: "publish on another member's ingress", as: a, args: []string{"pub", subjects.Ingress(e.bob.hex, e.roomB, "forged"), "intrusion"},
			deny: pub(subjects.Ingress(e.bob.hex, e.roomB, "forged")), expect: notAllowed + " (only its own `unibus.in.{self}.>`); nothing stored", intact: unchanged(e.roomB, histB)},
		{id: "N43", attack: "subscribe to its own room's stored subject", as: a, args: []string{"sub", subjects.SharedRoom(e.roomA), "--count", "1"},
			deny: sub(subjects.SharedRoom(e.roomA)), expect: onlyOwnSubs + ": rooms are read through listeners"},
		{id: "N44", attack: "subscribe to another room's own stream subject", as: a, args: []string{"sub", subjects.Room(e.roomBD), "--count", "1"},
			deny: sub(subjects.Room(e.roomBD)), expect: onlyOwnSubs},
		{id: "N45", attack: "subscribe to every member's ingress (messages before the relay)", as: a, args: []string{"sub", subjects.IngressPrefix + ".>", "--count", "1"},
			deny: sub(subjects.IngressPrefix + ".>"), expect: onlyOwnSubs},
		{id: "N46", attack: "subscribe to another member's deliveries", as: a, args: []string{"sub", subjects.DeliverOf(e.bob.hex), "--count", "1"},
			deny: sub(subjects.DeliverOf(e.bob.hex)), expect: onlyOwnSubs},
		{id: "N47", attack: "subscribe to everything", as: a, args: []string{"sub", ">", "--count", "1"},
			deny: sub(">"), expect: onlyOwnSubs},
		{id: "N60", attack: "log in with a keypair that was never registered", as: e.ghost,
			args: []string{"pub", subjects.Ingress(e.ghost.hex, e.roomA, "x"), "hi"},
			deny: "Authorization Violation", expect: "authenticator: unknown user", intact: unchanged(e.roomA, histA)},
		{id: "N61", attack: "log in without credentials", as: nil, args: []string{"pub", subjects.Ingress(e.alice.hex, e.roomA, "x"), "hi"},
			deny: "Authorization Violation", expect: "authenticator: nkey required", intact: unchanged(e.roomA, histA)},
	}
}

// pushReq is a JetStream request for a durable push consumer on the
// shared stream.
func pushReq(name, deliver, filter string) string {
	b, _ := json.Marshal(map[string]any{"stream_name": subjects.SharedStream, "config": map[string]any{
		"name": name, "durable_name": name, "deliver_subject": deliver, "filter_subject": filter, "deliver_policy": "all", "ack_policy": "none"}})
	return string(b)
}

// runNATSAttack runs one attack and judges it.
func (e *env) runNATSAttack(at natsAttack) Row {
	r := e.natsCLI(at.as, 20*time.Second, at.args...)
	tool := "nats " + at.args[0]
	switch at.args[0] {
	case "stream", "consumer", "kv", "object", "server":
		tool += " " + at.args[1]
	}
	row := Row{ID: at.id, Plane: "NATS", Attack: at.attack, Tool: tool, Expected: at.expect}
	if at.as != nil {
		row.Attack += " (as " + at.as.name + ")"
	}
	seen := violation.FindAllString(r.all(), -1)
	found := false
	for _, v := range seen {
		found = found || v == "Permissions Violation for "+at.deny || v == at.deny
	}
	changed := ""
	if at.intact != nil {
		changed = at.intact()
	}
	switch {
	case changed != "":
		row.Verdict, row.Observed = FailOpen, "state changed: "+changed
	case found:
		row.Verdict, row.Observed = Pass, "refused: `"+at.deny+"`"
	case len(seen) > 0:
		row.Verdict, row.Observed = FailDenial, "refused elsewhere: `"+strings.TrimPrefix(seen[0], "Permissions Violation for ")+"`"
	default:
		row.Verdict, row.Observed = FailOpen, fmt.Sprintf("no refusal (exit %d): %s", r.code, lastLine(r.all()))
	}
	return row
}

// natsControls are the positive controls: what a member must be able to
// do with the nats CLI alone (publish through its ingress, read through a
// listener it asked for), so that a broken harness cannot pass.
func (e *env) natsControls(rep *Report) {
	control := func(id, what, tool, expect string, ok bool, observed string) {
		v := Pass
		if !ok {
			v = FailControl
		}
		rep.Add(Row{ID: id, Plane: "NATS", Attack: "control: " + what, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}

	// N01: an envelope alice sealed for room A, published through her
	// ingress by the nats CLI with a JetStream ack (the relay answers in
	// JetStream's format).
	before := len(e.history(e.roomA))
	env := e.seal(e.alice, e.roomA, "control", 1, e.roomKey(e.alice, e.roomA, 1), time.Now(), "control")
	args := append([]string{"--timeout", controlTimeout, "pub", "--jetstream", subjects.Ingress(e.alice.hex, e.roomA, "control"), "--force-stdin", "--no-templates"},
		headerArgs(env.Headers())...)
	r := e.run(30*time.Second, bytes.NewReader(env.Payload), e.tl.nats, e.natsArgs(e.alice, args...)...)
	after := e.history(e.roomA)
	stored := len(after) == before+1 && strings.HasSuffix(after[len(after)-1], " "+env.MsgID)
	control("N01", "publish a sealed envelope through its own ingress with a JetStream ack (as alice)", "nats pub --jetstream",
		"allowed; the relay stores it in "+subjects.SharedStream+" and acknowledges",
		r.code == 0 && stored && strings.Contains(r.all(), subjects.SharedStream), fmt.Sprintf("exit %d, stored=%v, ack names %s=%v", r.code, stored,
			subjects.SharedStream, strings.Contains(r.all(), subjects.SharedStream)))

	// N02: a listener alice asks for with curl, read with nats sub on its
	// deliver subject.
	body := []byte(`{"deliver":"all"}`)
	c := e.curl("POST", e.bus.HTTPURL+listenerPath(e.roomA), e.signedHeaders(e.alice, nil, "POST", listenerPath(e.roomA), body, nil), body)
	var l wire.Listener
	json.Unmarshal([]byte(c.body), &l)
	read := false
	if c.status == 201 && l.DeliverSubject != "" {
		s := e.natsCLI(e.alice, 30*time.Second, "--timeout", controlTimeout, "sub", l.DeliverSubject, "--count", "1")
		read = s.code == 0 && strings.Contains(s.all(), subjects.SharedRoom(e.roomA)[:len(subjects.SharedRoom(e.roomA))-1])
	}
	control("N02", "ask for a listener on its own room (curl) and read it on its deliver subject (as alice)", "curl; nats sub",
		"allowed (201); a message of room A arrives on `unibus.dlv.{alice}.…`", c.status == 201 && read,
		fmt.Sprintf("%s, message read=%v", c.outcome(), read))

	// N03: the unibus CLI, end to end.
	u := harness.Run(e.t, e.dir, e.cliEnv(e.bob), "", "unibus", "listen", "room-b", "--from-start", "--count", "1", "--wait", "20s")
	control("N03", "read its own room with `unibus listen` (as bob)", "unibus listen", "allowed; bob's message printed",
		u.Code == 0 && strings.Contains(u.Stdout, "bob: bob's first message"), fmt.Sprintf("exit %d, printed=%v", u.Code, strings.Contains(u.Stdout, "bob's first message")))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

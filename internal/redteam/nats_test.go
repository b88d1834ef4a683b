package redteam

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/testbin"
	"github.com/unibus/unibus/subjects"
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

// natsAttack is one thing the ACL must refuse to a member.
type natsAttack struct {
	id, attack string
	as         *user // nil: no credentials
	args       []string
	deny       string        // the refusal the server must send: `Publish to "…"`, `Subscription to "…"` or "Authorization Violation"
	expect     string        // the expected denial, for the table
	intact     func() string // "" when the server's state is as before; else what changed
	timeout    time.Duration
}

// natsAttacks is every subject class the data-plane ACL must deny, tried
// by alice (member of room A only) with the nats CLI.
func (e *env) natsAttacks() []natsAttack {
	A, B := e.streamA(), e.streamB()
	msgsA, msgsB := e.msgs(A), e.msgs(B)
	subjA := e.streamSubjects(A)
	unchanged := func(stream string, n int) func() string {
		return func() string {
			if got := e.msgs(stream); got != n {
				return fmt.Sprintf("%s went from %d to %d messages", stream, n, got)
			}
			return ""
		}
	}
	noStream := func(name string) func() string {
		return func() string {
			if e.msgs(name) >= 0 {
				return "stream " + name + " exists"
			}
			return ""
		}
	}
	keepsConsumer := func(stream, name string) func() string {
		return func() string {
			if !e.hasConsumer(stream, name) {
				return "consumer " + name + " is gone"
			}
			return ""
		}
	}
	noConsumer := func(stream, name string) func() string {
		return func() string {
			if e.hasConsumer(stream, name) {
				return "consumer " + name + " was created"
			}
			return ""
		}
	}
	sameSubjects := func() string {
		if got := e.streamSubjects(A); strings.Join(got, ",") != strings.Join(subjA, ",") {
			return fmt.Sprintf("%s now captures %v", A, got)
		}
		return unchanged(A, msgsA)()
	}
	pub := func(s string) string { return `Publish to "` + s + `"` }
	sub := func(s string) string { return `Subscription to "` + s + `"` }
	a, bobInbox := e.alice, subjects.InboxPrefix(e.bob.hex)
	consumerReq := `{"stream_name":"` + B + `","config":{"name":"spy","durable_name":"spy","ack_policy":"explicit"}}`
	return []natsAttack{
		{id: "N10", attack: "create a stream capturing its own room", as: a,
			args: []string{"stream", "add", "EVIL", "--subjects", subjects.RoomTopic(e.roomA, "evil"), "--defaults"},
			deny: pub("$JS.API.STREAM.CREATE.EVIL"), expect: "ACL denies `$JS.API.STREAM.CREATE.>`; no stream EVIL", intact: noStream("EVIL")},
		{id: "N11", attack: "delete its own room's stream", as: a, args: []string{"stream", "rm", A, "-f"},
			deny: pub("$JS.API.STREAM.DELETE." + A), expect: "ACL denies `$JS.API.STREAM.DELETE.>`; stream kept", intact: unchanged(A, msgsA)},
		{id: "N12", attack: "purge its own room's stream", as: a, args: []string{"stream", "purge", A, "-f"},
			deny: pub("$JS.API.STREAM.PURGE." + A), expect: "ACL denies `$JS.API.STREAM.PURGE.>`; messages kept", intact: unchanged(A, msgsA)},
		{id: "N13", attack: "widen its own room's stream to every room (update)", as: a,
			args: []string{"stream", "edit", A, "--subjects", "unibus.room.>", "-f"},
			deny: pub("$JS.API.STREAM.UPDATE." + A), expect: "ACL denies `$JS.API.STREAM.UPDATE.>`; subjects unchanged", intact: sameSubjects},
		{id: "N14", attack: "delete a message of its own room", as: a, args: []string{"stream", "rmm", A, "1", "-f"},
			deny: pub("$JS.API.STREAM.MSG.DELETE." + A), expect: "ACL denies `$JS.API.STREAM.MSG.DELETE.>`", intact: unchanged(A, msgsA)},
		{id: "N15", attack: "delete another room's stream", as: a, args: []string{"stream", "rm", B, "-f"},
			deny: pub("$JS.API.STREAM.DELETE." + B), expect: "ACL denies; stream kept", intact: unchanged(B, msgsB)},
		{id: "N16", attack: "read another room's stream info", as: a, args: []string{"stream", "info", B},
			deny: pub("$JS.API.STREAM.INFO." + B), expect: "not in the allow list (own rooms only)"},
		{id: "N17", attack: "get a message of another room", as: a, args: []string{"request", "$JS.API.STREAM.MSG.GET." + B, `{"seq":1}`},
			deny: pub("$JS.API.STREAM.MSG.GET." + B), expect: "not in the allow list"},
		{id: "N18", attack: "direct-get a message of another room", as: a, args: []string{"request", "$JS.API.DIRECT.GET." + B, `{"seq":1}`},
			deny: pub("$JS.API.DIRECT.GET." + B), expect: "not in the allow list"},
		{id: "N19", attack: "create a consumer on another room's stream", as: a,
			args: []string{"request", "$JS.API.CONSUMER.CREATE." + B + ".spy", consumerReq},
			deny: pub("$JS.API.CONSUMER.CREATE." + B + ".spy"), expect: "not in the allow list; no consumer", intact: noConsumer(B, "spy")},
		{id: "N20", attack: "create a durable on another room's stream (legacy API)", as: a,
			args: []string{"request", "$JS.API.CONSUMER.DURABLE.CREATE." + B + ".spy", consumerReq},
			deny: pub("$JS.API.CONSUMER.DURABLE.CREATE." + B + ".spy"), expect: "ACL denies `$JS.API.CONSUMER.DURABLE.>`", intact: noConsumer(B, "spy")},
		{id: "N21", attack: "pull from another member's consumer", as: a,
			args: []string{"request", "$JS.API.CONSUMER.MSG.NEXT." + B + ".bobs", `{"batch":1,"no_wait":true}`},
			deny: pub("$JS.API.CONSUMER.MSG.NEXT." + B + ".bobs"), expect: "not in the allow list"},
		{id: "N22", attack: "delete another member's consumer", as: a, args: []string{"consumer", "rm", B, "bobs", "-f"},
			deny: pub("$JS.API.CONSUMER.DELETE." + B + ".bobs"), expect: "not in the allow list; consumer kept", intact: keepsConsumer(B, "bobs")},
		{id: "N23", attack: "write a control-plane KV key (nats kv put)", as: a, args: []string{"kv", "put", "UNIBUS_users", "evil", "admin"},
			deny: pub("$JS.API.STREAM.INFO.KV_UNIBUS_users"), expect: "not in the allow list (and the buckets live in another account)"},
		{id: "N24", attack: "publish to a KV subject", as: a, args: []string{"pub", "$KV.UNIBUS_users.evil", "admin"},
			deny: pub("$KV.UNIBUS_users.evil"), expect: "ACL denies `$KV.>`"},
		{id: "N25", attack: "create a KV bucket (stream KV_evil)", as: a,
			args: []string{"request", "$JS.API.STREAM.CREATE.KV_evil", `{"name":"KV_evil","subjects":["$KV.evil.>"]}`},
			deny: pub("$JS.API.STREAM.CREATE.KV_evil"), expect: "ACL denies `$JS.API.STREAM.CREATE.>`", intact: noStream("KV_evil")},
		{id: "N26", attack: "write the blob object store (nats object put)", as: a, args: []string{"object", "put", "UNIBUS_blobs", e.caCrt},
			deny: pub("$JS.API.STREAM.INFO.OBJ_UNIBUS_blobs"), expect: "not in the allow list"},
		{id: "N27", attack: "publish to an object-store subject", as: a, args: []string{"pub", "$O.UNIBUS_blobs.C.evil", "x"},
			deny: pub("$O.UNIBUS_blobs.C.evil"), expect: "ACL denies `$O.>`"},
		{id: "N28", attack: "list every stream", as: a, args: []string{"stream", "ls"},
			deny: pub("$JS.API.STREAM.LIST"), expect: "ACL denies `$JS.API.STREAM.LIST`"},
		{id: "N29", attack: "read the JetStream account", as: a, args: []string{"request", "$JS.API.INFO", ""},
			deny: pub("$JS.API.INFO"), expect: "ACL denies `$JS.API.INFO`"},
		{id: "N30", attack: "subscribe to another user's inbox", as: a, args: []string{"sub", bobInbox + ".>", "--count", "1"},
			deny: sub(bobInbox + ".>"), expect: "only its own `_INBOX_{self}.>`"},
		{id: "N31", attack: "publish into another user's inbox", as: a, args: []string{"pub", bobInbox + ".x", "forged reply"},
			deny: pub(bobInbox + ".x"), expect: "not in the allow list"},
		{id: "N32", attack: "subscribe to every default inbox", as: a, args: []string{"sub", "_INBOX.>", "--count", "1"},
			deny: sub("_INBOX.>"), expect: "not in the allow list"},
		{id: "N33", attack: "ping the servers ($SYS)", as: a, args: []string{"server", "ping"},
			deny: pub("$SYS.REQ.SERVER.PING"), expect: "ACL denies `$SYS.>`"},
		{id: "N34", attack: "subscribe to system events", as: a, args: []string{"sub", "$SYS.>", "--count", "1"},
			deny: sub("$SYS.>"), expect: "ACL denies `$SYS.>`"},
		{id: "N35", attack: "list connections ($SYS CONNZ)", as: a, args: []string{"request", "$SYS.REQ.SERVER.PING.CONNZ", ""},
			deny: pub("$SYS.REQ.SERVER.PING.CONNZ"), expect: "ACL denies `$SYS.>`"},
		{id: "N40", attack: "publish into another room", as: a, args: []string{"pub", subjects.RoomTopic(e.roomB, "forged"), "intrusion"},
			deny: pub(subjects.RoomTopic(e.roomB, "forged")), expect: "not in the allow list; nothing stored", intact: unchanged(B, msgsB)},
		{id: "N41", attack: "publish into another room with a JetStream ack", as: a,
			args: []string{"pub", "--jetstream", subjects.RoomTopic(e.roomB, "forged"), "intrusion"},
			deny: pub(subjects.RoomTopic(e.roomB, "forged")), expect: "not in the allow list; nothing stored", intact: unchanged(B, msgsB)},
		{id: "N42", attack: "subscribe to another room", as: a, args: []string{"sub", subjects.Room(e.roomB), "--count", "1"},
			deny: sub(subjects.Room(e.roomB)), expect: "not in the allow list"},
		{id: "N43", attack: "subscribe to every room", as: a, args: []string{"sub", "unibus.>", "--count", "1"},
			deny: sub("unibus.>"), expect: "not in the allow list"},
		{id: "N44", attack: "subscribe to everything", as: a, args: []string{"sub", ">", "--count", "1"},
			deny: sub(">"), expect: "not in the allow list"},
		{id: "N60", attack: "log in with a keypair that was never registered", as: e.ghost,
			args: []string{"pub", subjects.RoomTopic(e.roomA, "x"), "hi"},
			deny: "Authorization Violation", expect: "authenticator: unknown user", intact: unchanged(A, msgsA)},
		{id: "N61", attack: "log in without credentials", as: nil, args: []string{"pub", subjects.RoomTopic(e.roomA, "x"), "hi"},
			deny: "Authorization Violation", expect: "authenticator: nkey required", intact: unchanged(A, msgsA)},
	}
}

// runNATSAttack runs one attack and judges it.
func (e *env) runNATSAttack(at natsAttack) Row {
	timeout := at.timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	r := e.natsCLI(at.as, timeout, at.args...)
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
		row.Verdict, row.Observed = Pass, "refused: `"+strings.TrimPrefix(at.deny, "Permissions Violation for ")+"`"
	case len(seen) > 0:
		row.Verdict, row.Observed = FailDenial, "refused elsewhere: `"+seen[0]+"`"
	default:
		row.Verdict, row.Observed = FailOpen, fmt.Sprintf("no refusal (exit %d): %s", r.code, lastLine(r.all()))
	}
	return row
}

// natsControls are the positive controls: what a member must be able to
// do with the nats CLI alone, so that a broken harness cannot pass.
func (e *env) natsControls(rep *Report) {
	A, B := e.streamA(), e.streamB()
	control := func(id, what, tool, expect string, ok bool, observed string) {
		v := Pass
		if !ok {
			v = FailControl
		}
		rep.Add(Row{ID: id, Plane: "NATS", Attack: "control: " + what, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}

	before := e.msgs(A)
	r := e.natsCLI(e.alice, 30*time.Second, "--timeout", controlTimeout, "pub", "--jetstream", subjects.RoomTopic(e.roomA, "control"), "control")
	ok := r.code == 0 && strings.Contains(r.stdout+r.stderr, "Stored in Stream: "+A) && e.msgs(A) == before+1
	control("N01", "publish to its own room with a JetStream ack (as alice)", "nats pub --jetstream", "allowed; stored",
		ok, fmt.Sprintf("exit %d, stored=%v", r.code, e.msgs(A) == before+1))

	r = e.natsCLI(e.alice, 30*time.Second, "--timeout", controlTimeout, "consumer", "add", A, "redteam", "--pull", "--defaults")
	r2 := e.natsCLI(e.alice, 30*time.Second, "--timeout", controlTimeout, "consumer", "next", A, "redteam", "--count", "1")
	ok = r.code == 0 && r2.code == 0 && strings.Contains(r2.all(), "subj: "+subjects.RoomTopic(e.roomA, ""))
	control("N02", "read its own room through a durable pull consumer (as alice)", "nats consumer add/next", "allowed; a message is read",
		ok, fmt.Sprintf("exit %d/%d, message read=%v", r.code, r2.code, strings.Contains(r2.all(), "subj: ")))

	got, err := e.liveSubscribe()
	control("N03", "subscribe to its own room and receive a live message (as alice)", "nats sub", "allowed; received",
		err == nil && got, fmt.Sprintf("received=%v %s", got, errText(err)))

	r = e.natsCLI(e.bob, 30*time.Second, "--timeout", controlTimeout, "consumer", "add", B, "bobs", "--pull", "--defaults")
	control("N04", "create a durable consumer on its own room (as bob; target of N21, N22)", "nats consumer add", "allowed",
		r.code == 0 && e.hasConsumer(B, "bobs"), fmt.Sprintf("exit %d, consumer exists=%v", r.code, e.hasConsumer(B, "bobs")))
}

// liveSubscribe subscribes as alice to her room with the nats CLI, waits
// until the subscription is in place, publishes one message as alice, and
// reports whether the subscriber printed it.
func (e *env) liveSubscribe() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.tl.nats, e.natsArgs(e.alice, "--timeout", controlTimeout, "sub", subjects.Room(e.roomA), "--count", "1")...)
	cmd.Dir, cmd.Env = e.dir, e.toolEnv()
	cmd.WaitDelay = 2 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return false, err
	}
	var mu sync.Mutex
	var out strings.Builder
	subscribed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "Subscribing on") {
				once.Do(func() { close(subscribed) })
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); pw.Close() }()
	select {
	case <-subscribed:
	case err := <-waitErr:
		<-done
		return false, fmt.Errorf("nats sub exited: %v: %s", err, lastLine(out.String()))
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// The CLI may print before the server has the subscription: publish
	// until the subscriber has its message and exits (--count 1).
	var err error
	published := false
	for i := 0; i < 20 && !published; i++ {
		if r := e.natsCLI(e.alice, 30*time.Second, "--timeout", controlTimeout, "pub", subjects.RoomTopic(e.roomA, "live"), "live"); r.code != 0 {
			return false, fmt.Errorf("nats pub: exit %d: %s", r.code, lastLine(r.all()))
		}
		select {
		case err = <-waitErr:
			published = true
		case <-time.After(500 * time.Millisecond):
		}
	}
	if !published {
		err = <-waitErr // the context ends it
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("nats sub: %v: %s", err, lastLine(out.String()))
	}
	return strings.Contains(out.String(), `Received on "`+subjects.RoomTopic(e.roomA, "live")+`"`), nil
}

// natsInjections run after the other attacks (they write to room A and
// may write to room B): JetStream sends publish acks to a reply subject
// the publisher chooses, unchecked, and a push consumer delivers to the
// subject its creator chooses (nats-server#8274). What reaches another
// room must be refused by its members' clients.
func (e *env) natsInjections(rep *Report) {
	A, B := e.streamA(), e.streamB()
	add := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "NATS", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	for _, c := range []struct{ id, api string }{{"N50", "DELETE"}, {"N51", "PURGE"}} {
		before := e.msgs(B)
		r := e.natsCLI(e.alice, 20*time.Second, "pub", subjects.RoomTopic(e.roomA, "x"), `{"seq":99}`, "--reply", "$JS.API.STREAM."+c.api+"."+B)
		time.Sleep(500 * time.Millisecond)
		v, obs := Pass, fmt.Sprintf("published (exit %d); %s intact", r.code, B)
		if after := e.msgs(B); after != before {
			v, obs = FailOpen, fmt.Sprintf("%s went from %d to %d messages", B, before, after)
		}
		add(c.id, "reply-subject injection: publish to its own room with reply `$JS.API.STREAM."+c.api+"."+B+"` (as alice)", "nats pub --reply",
			map[string]string{"DELETE": "stream deletion disabled node-wide; " + B + " kept", "PURGE": "room streams deny purge; messages kept"}[c.api], v, obs)
	}

	before := e.msgs(B)
	r := e.natsCLI(e.alice, 20*time.Second, "pub", subjects.RoomTopic(e.roomA, "x"), "payload", "--reply", subjects.RoomTopic(e.roomB, "injected"))
	v, obs := e.membersRefuse(e.grows(B, before, 5*time.Second))
	add("N52", "reply-subject injection into another room: publish ack sent to `"+subjects.RoomTopic(e.roomB, "injected")+"` (as alice)",
		"nats pub --reply; unibus listen", "may be stored (known gap: reply subjects are not checked); bob's client refuses it, never delivers it",
		v, fmt.Sprintf("exit %d; ", r.code)+obs)

	before = e.msgs(B)
	r = e.natsCLI(e.alice, 20*time.Second, "consumer", "add", A, "push", "--target", subjects.RoomTopic(e.roomB, "chat"),
		"--deliver", "all", "--ack", "none", "--defaults")
	v, obs = e.membersRefuse(e.grows(B, before, 2*time.Second))
	add("N53", "push consumer on its own room delivering into another room (nats-server#8274; as alice)", "nats consumer add --target; unibus listen",
		"nothing reaches room B's stream, or bob's client refuses it", v, fmt.Sprintf("consumer add exit %d; ", r.code)+obs)
}

// grows waits up to d for stream to hold more than before messages, and
// returns how many more it holds.
func (e *env) grows(stream string, before int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := e.msgs(stream) - before
		if n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// membersRefuse judges what an injection left in room B: nothing, or
// messages that bob's `unibus listen` reports and does not deliver. Room
// B holds e.genuineB messages that bob really sent.
func (e *env) membersRefuse(stored int) (Verdict, string) {
	if stored == 0 {
		return Pass, "nothing stored in " + e.streamB()
	}
	r := testbin.Run(e.t, e.dir, e.cliEnv(e.bob), "", "unibus", "--json", "listen", "room-b", "--from-start", "--wait", "8s")
	delivered, foreign := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if line == "" {
			continue
		}
		var m struct{ Handle, Data string }
		if json.Unmarshal([]byte(line), &m) != nil || m.Handle != "bob" {
			foreign++
		}
		delivered++
	}
	refused := strings.Count(r.Stderr, "not delivered")
	obs := fmt.Sprintf("%d stored in %s; bob's client delivered %d genuine, refused %d", stored, e.streamB(), delivered-foreign, refused)
	if foreign > 0 || delivered != e.genuineB || refused < e.msgs(e.streamB())-e.genuineB {
		return FailOpen, obs + "; delivered " + strconv.Itoa(foreign) + " foreign"
	}
	return Pass, obs
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

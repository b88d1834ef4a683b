package redteam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// Consumers' internal subjects across rooms. In protocol 1 a member made
// a push consumer delivering to $JS.API.CONSUMER.RESET.<another room's
// stream>.<consumer> and so reset another room's consumer. In protocol 2
// members make no consumers and reach no JetStream API; what is left to
// them is answering flow control ($JS.FC.>), their own ingress and the
// listeners API. Each attempt is judged by bob's listener on room B: it
// exists, and its delivered sequences and pending count are unchanged
// (nothing is sent to room B meanwhile).

// bobsListener starts bob's SDK listener on room B, the victim of the
// listener attacks, and finds its consumer (N04). It listens to one
// topic, so that its consumer (filtered on that topic) is told apart
// from other listeners of bob's on room B.
func (e *env) bobsListener(rep *Report) (consumer, *listening) {
	l := listenSDK(e.sdk(e.bob, nil), e.roomB, subjects.DefaultTopic, true)
	e.t.Cleanup(func() { l.end() })
	got := l.waitFor(30*time.Second, func(d, _ int) bool { return d >= 1 })
	var bobs consumer
	for _, c := range e.listenersOf(e.bob, subjects.SharedStream) {
		if c.Room == e.roomB && c.Filter == subjects.Shared(e.roomB, subjects.DefaultTopic) {
			bobs = c
		}
	}
	v := Pass
	if !got || bobs.Name == "" || !strings.HasPrefix(bobs.Deliver, subjects.DeliverPrefix+"."+e.bob.hex+".") {
		v = FailControl
	}
	d, _ := l.counts()
	rep.Add(Row{ID: "N04", Plane: "NATS", Attack: "control: bob listens to room B's topic `msg` with the SDK (the listener N21, N22 and N70–N76 aim at)",
		Tool: "the SDK (client.Listen)", Expected: "a listener of bob's on " + subjects.SharedStream + " delivering on `unibus.dlv.{bob}.…`; bob's message delivered",
		Observed: fmt.Sprintf("delivered %d; listener found=%v", d, bobs.Name != ""), Verdict: v})
	if bobs.Name == "" {
		e.t.Fatal("bob's listener not found")
	}
	e.norm.add(bobs.Deliver, "unibus.dlv.{bob}.{token}", bobs.Name, "{bob's listener}")
	return bobs, l
}

// listenerIntact reports what changed in bob's listener since before:
// "" when nothing did.
func (e *env) listenerIntact(before consumer, l *listening, delivered, refused int) string {
	now, ok := e.consumerState(before.Stream, before.Name)
	switch {
	case !ok:
		return "bob's listener is gone"
	case now.DeliveredConsumer != before.DeliveredConsumer || now.DeliveredStream != before.DeliveredStream ||
		now.Pending != before.Pending || now.Redelivered != before.Redelivered:
		return fmt.Sprintf("bob's listener moved: delivered %d/%d → %d/%d, pending %d → %d", before.DeliveredConsumer, before.DeliveredStream,
			now.DeliveredConsumer, now.DeliveredStream, before.Pending, now.Pending)
	}
	if d, r := l.counts(); d != delivered || r != refused {
		return fmt.Sprintf("bob's SDK delivered %d → %d, reported %d → %d", delivered, d, refused, r)
	}
	return ""
}

// consumerAttacks are N70–N76.
func (e *env) consumerAttacks(rep *Report, bobs consumer, l *listening) {
	shared := subjects.SharedStream
	reset := "$JS.API.CONSUMER.RESET." + shared + "." + bobs.Name
	fc := "$JS.FC." + shared + "." + bobs.Name
	keyA := e.roomKey(e.alice, e.roomA, 1)
	validA := func() (subject string, h map[string][]string, payload []byte) {
		env := e.seal(e.alice, e.roomA, "steer", 1, keyA, time.Now(), "steered")
		return subjects.Ingress(e.alice.hex, e.roomA, "steer"), env.Headers(), env.Payload
	}
	type attempt struct {
		id, attack, tool, expect string
		as                       *user
		do                       func() (refusedAsExpected bool, observed string)
	}
	cli := func(u *user, deny string, args ...string) func() (bool, string) {
		return func() (bool, string) {
			r := e.natsCLI(u, 20*time.Second, args...)
			if deny == "" {
				return r.code == 0, fmt.Sprintf("published (exit %d)", r.code)
			}
			for _, v := range violation.FindAllString(r.all(), -1) {
				if v == "Permissions Violation for "+deny {
					return true, "refused: `" + deny + "`"
				}
			}
			return false, fmt.Sprintf("no refusal (exit %d): %s", r.code, lastLine(r.all()))
		}
	}
	attempts := []attempt{
		{id: "N70", attack: "reset another member's listener (`$JS.API.CONSUMER.RESET`)", tool: "nats request", as: e.alice,
			expect: noJetStream + "; listener unchanged",
			do:     cli(e.alice, `Publish to "`+reset+`"`, "request", reset, `{"seq":1}`)},
		{id: "N71", attack: "answer another member's listener's flow control: 200 guessed subjects `$JS.FC." + shared + ".{bob's listener}.<n>`",
			tool: "nats pub --count", as: e.alice,
			expect: "allowed (members answer flow control on `$JS.FC.>`); a listener acts only on its latest request's random subject: unchanged",
			do:     cli(e.alice, "", "pub", fc+".{{Count}}", "", "--count", "200")},
		{id: "N72", attack: "a flow-control answer whose reply subject is bob's listener's reset API", tool: "nats pub --reply", as: e.alice,
			expect: "allowed; nothing answers a flow-control message, and answers stay in the members account: unchanged",
			do:     cli(e.alice, "", "pub", fc+".x", "", "--reply", reset)},
		{id: "N73", attack: "publish through its own ingress with reply subjects bob's listener's reset and delete APIs", tool: "nats pub --reply", as: e.alice,
			expect: "the relay stores alice's message in room A and answers only under `_INBOX_{alice}.`: unchanged",
			do: func() (bool, string) {
				for _, reply := range []string{reset, "$JS.API.CONSUMER.DELETE." + shared + "." + bobs.Name} {
					subj, h, payload := validA()
					args := append([]string{"pub", subj, "--force-stdin", "--no-templates", "--reply", reply}, headerArgs(h)...)
					if r := e.run(20*time.Second, bytes.NewReader(payload), e.tl.nats, e.natsArgs(e.alice, args...)...); r.code != 0 {
						return false, fmt.Sprintf("exit %d: %s", r.code, lastLine(r.all()))
					}
				}
				return true, "published (exit 0)"
			}},
		{id: "N74", attack: "publish a forged heartbeat into bob's deliveries", tool: "nats pub", as: e.alice,
			expect: notAllowed + "; listener unchanged",
			do:     cli(e.alice, `Publish to "`+bobs.Deliver+`"`, "pub", bobs.Deliver, "", "-H", "Status:100", "-H", "Nats-Last-Consumer:999")},
		{id: "N75", attack: "delete another member's listener through the API (as mallory, a member of room B)", tool: "curl", as: e.mallory,
			expect: "404 not_found (only its own listeners); listener kept",
			do: func() (bool, string) {
				path := listenerPath(e.roomB) + "/" + bobs.Name
				c := e.curl("DELETE", e.bus.HTTPURL+path, e.signedHeaders(e.mallory, nil, "DELETE", path, nil, nil), nil)
				return c.outcome() == "404 not_found", c.outcome()
			}},
		{id: "N76", attack: "ask for a listener delivering to a subject of its choosing (bob's deliveries) (as mallory)", tool: "curl", as: e.mallory,
			expect: "400 unknown_field: membershipd chooses every deliver subject; no listener made",
			do: func() (bool, string) {
				body, _ := json.Marshal(map[string]string{"deliver": wire.DeliverAll, "deliver_subject": bobs.Deliver})
				before := len(e.listenersOf(e.mallory, subjects.SharedStream))
				c := e.curl("POST", e.bus.HTTPURL+listenerPath(e.roomB), e.signedHeaders(e.mallory, nil, "POST", listenerPath(e.roomB), body, nil), body)
				after := len(e.listenersOf(e.mallory, subjects.SharedStream))
				return c.outcome() == "400 unknown_field" && after == before, fmt.Sprintf("%s; mallory's listeners %d → %d", c.outcome(), before, after)
			}},
	}
	for _, at := range attempts {
		before, _ := e.consumerState(shared, bobs.Name)
		d, r := l.counts()
		ok, obs := at.do()
		// The flow-control and relay paths are asynchronous: a round trip
		// through the relay (alice's own request, answered only once the
		// relay handled what she published before) orders them.
		e.relaySentinel(e.alice)
		changed := e.listenerIntact(before, l, d, r)
		row := Row{ID: at.id, Plane: "NATS", Attack: at.attack, Tool: at.tool, Expected: at.expect}
		if at.as != nil && !strings.Contains(at.attack, "(as ") {
			row.Attack += " (as " + at.as.name + ")"
		}
		switch {
		case changed != "":
			row.Verdict, row.Observed = FailOpen, obs+"; "+changed
		case ok:
			row.Verdict, row.Observed = Pass, obs+"; bob's listener unchanged"
		default:
			row.Verdict, row.Observed = FailDenial, obs
		}
		rep.Add(row)
	}
}

// relaySentinel publishes one genuine message of u's into room A through
// the relay and waits for its answer: the relay handles a node's ingress
// in order, so whatever u published before has been handled.
func (e *env) relaySentinel(u *user) {
	e.t.Helper()
	epoch := e.epochOf(u, e.roomA)
	env := e.seal(u, e.roomA, "sentinel", epoch, e.roomKey(u, e.roomA, epoch), time.Now(), "sentinel")
	a, r := e.relayPublish(u, subjects.Ingress(u.hex, e.roomA, "sentinel"), env.Headers(), env.Payload)
	if a.Error != nil {
		e.t.Errorf("relay sentinel: %s (%s)", answerText(a), lastLine(r.all()))
	}
}

// epochOf is a room's current epoch as u sees it.
func (e *env) epochOf(u *user, room string) uint64 {
	var ri wire.RoomInfo
	if st, code := e.api(u, "GET", "/v1/rooms/"+room, nil, &ri); st != 200 {
		e.t.Fatalf("room %s: %d %s", room, st, code)
	}
	return ri.Room.Epoch
}

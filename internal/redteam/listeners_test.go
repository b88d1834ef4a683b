package redteam

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/unibus/unibus/internal/dataplane"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// capAge is how long the cap rows wait with mallory's listeners alive:
// past the listeners' inactivity threshold, after which a node re-checks
// the listeners it counts.
const capAge = dataplane.DefaultInactive + 2*time.Second

// listenerCap: one member's listeners do not stop another's. In protocol
// 1 one member made 1,000 consumers on a room's stream and then nobody
// could listen. Now membershipd makes every listener and counts them per
// member and node (at most dataplane.DefaultMaxListeners). mallory, a
// member of rooms B and BD, asks for listeners on BD (a room with a stream
// of its own) until she is refused; bob must still listen to both rooms,
// and mallory must still be refused once her listeners are older than
// their inactivity threshold (she keeps them alive by subscribing to her
// deliveries, as a client does).
func (e *env) listenerCap(rep *Report) {
	add := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "NATS", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	bd := subjects.Stream(e.roomBD)
	m := e.dialRaw(e.mallory)
	body := []byte(`{"deliver":"new"}`)
	path := listenerPath(e.roomBD)
	// ask asks for one more listener and, as a client does, subscribes to
	// its deliver subject (a listener without interest on its exact
	// subject is deleted by the server after its inactivity threshold).
	ask := func() httpResult {
		c := e.curl("POST", e.bus.HTTPURL+path, e.signedHeaders(e.mallory, nil, "POST", path, body, nil), body)
		var l wire.Listener
		if c.status == 201 && json.Unmarshal([]byte(c.body), &l) == nil {
			if _, err := m.collect(l.DeliverSubject); err != nil {
				e.t.Errorf("mallory's subscription: %v", err)
			}
		}
		return c
	}

	// N90: until refused.
	start := time.Now()
	made := 0
	var last httpResult
	for range 2 * dataplane.DefaultMaxListeners {
		if last = ask(); last.status != 201 {
			break
		}
		made++
	}
	m.nc.Flush()
	live := len(e.listenersOf(e.mallory, bd))
	v := Pass
	switch {
	case made > dataplane.DefaultMaxListeners || live > dataplane.DefaultMaxListeners:
		v = FailOpen
	case made != dataplane.DefaultMaxListeners || last.outcome() != "429 too_many":
		v = FailDenial
	}
	add("N90", "ask for listeners on room BD until refused (as mallory)", "curl",
		fmt.Sprintf("%d made, then 429 too_many: at most %d listeners per member and node", dataplane.DefaultMaxListeners, dataplane.DefaultMaxListeners),
		v, fmt.Sprintf("%d made, then %s; %d live on ROOM_{BD}", made, last.outcome(), live))

	// N91: bob listens to both rooms meanwhile.
	bob := e.sdk(e.bob, nil)
	var got []string
	ok := true
	for _, room := range []string{e.roomBD, e.roomB} {
		l := listenSDK(bob, room, "", true)
		ok = l.waitFor(30*time.Second, func(d, _ int) bool { return d >= 1 }) && ok
		d, _ := l.counts()
		got = append(got, fmt.Sprintf("%d", d))
		if err := l.end(); err != nil {
			ok = false
			got = append(got, err.Error())
		}
	}
	v = Pass
	if !ok {
		v = FailOpen
	}
	add("N91", "with mallory at her cap, another member listens to the same rooms (bob, on BD and B)", "the SDK (client.Listen)",
		"bob's listeners are made and deliver", v, fmt.Sprintf("bob's listeners delivered %s and %s messages", got[0], got[1]))

	// N92: the cap holds once mallory's listeners are older than their
	// inactivity threshold. This wait is the point of the row: nothing
	// is expected to happen in it.
	time.Sleep(time.Until(start.Add(capAge)))
	again := ask()
	live = len(e.listenersOf(e.mallory, bd))
	v = Pass
	switch {
	case again.status == 201 || live > dataplane.DefaultMaxListeners:
		v = FailOpen
	case again.outcome() != "429 too_many":
		v = FailDenial
	}
	add("N92", fmt.Sprintf("ask again %d s later, her %d listeners kept alive by her subscriptions (as mallory)", int(capAge/time.Second), made),
		"curl", "429 too_many: the cap holds for listeners on a room's own stream", v,
		fmt.Sprintf("%s; %d of mallory's listeners live on ROOM_{BD}", again.outcome(), live))
}

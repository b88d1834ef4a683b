package redteam

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// roomAttacks: a room's retention cannot be changed by naming its id. In
// protocol 1, POST /v1/rooms with an existing room's id and other limits
// created-or-updated the room's stream before the store refused the
// duplicate. Each attempt here is judged by the victim room's stream
// configuration, its record and its history, for a room in the shared
// stream (B) and a room with a stream of its own (BD).
func (e *env) roomAttacks(rep *Report) {
	shared, ownBD, ownB := subjects.SharedStream, subjects.Stream(e.roomBD), subjects.Stream(e.roomB)
	var bd wire.RoomInfo
	if st, code := e.api(e.bob, "GET", "/v1/rooms/"+e.roomBD, nil, &bd); st != http.StatusOK {
		e.t.Fatalf("room BD: %d %s", st, code)
	}
	attacks := []struct {
		id, attack string
		room       string
		age, bytes int64
		expect     string
		stray      string // a stream that must not exist afterwards
	}{
		{id: "H70", attack: "create a room with room B's id (shared stream) and a 1 s max age", room: e.roomB, age: 1,
			expect: "409 conflict; " + shared + "'s configuration, room B's record and history unchanged"},
		{id: "H71", attack: "create a room with room B's id (shared stream) and a byte limit (a stream of its own)", room: e.roomB, age: 300, bytes: 1024,
			expect: "409 conflict; nothing made in JetStream (no stream " + ownB + "); room B unchanged", stray: ownB},
		{id: "H72", attack: "create a room with room BD's id (a stream of its own) and other limits (300 s, 1 KiB)", room: e.roomBD, age: 300, bytes: 1024,
			expect: "409 conflict; " + ownBD + "'s configuration, room BD's record and history unchanged"},
		{id: "H73", attack: "create a room with room BD's id and exactly its limits", room: e.roomBD, age: bd.Room.MaxAgeSeconds, bytes: bd.Room.MaxBytes,
			expect: "409 conflict; room BD unchanged"},
		{id: "H74", attack: "create a room with room BD's id, no byte limit and a 1 s max age", room: e.roomBD, age: 1,
			expect: "409 conflict; room BD unchanged"},
	}
	for _, at := range attacks {
		owner := e.bob
		stream, _ := e.roomStream(at.room)
		cfg, hist, rec := e.streamConfig(stream), e.history(at.room), e.roomRecord(owner, at.room)
		body := e.createRoomBody(e.alice, at.room, "hijack", at.age, at.bytes)
		c := e.curl("POST", e.bus.HTTPURL+"/v1/rooms", e.signedHeaders(e.alice, nil, "POST", "/v1/rooms", body, nil), body)
		var changed []string
		if e.streamConfig(stream) != cfg {
			changed = append(changed, stream+"'s configuration")
		}
		if !slices.Equal(e.history(at.room), hist) {
			changed = append(changed, "the room's history")
		}
		if e.roomRecord(owner, at.room) != rec {
			changed = append(changed, "the room's record")
		}
		if at.stray != "" && e.streamExists(at.stray) {
			changed = append(changed, "stream "+at.stray+" was made")
		}
		row := Row{ID: at.id, Plane: "HTTP", Attack: at.attack + " (as alice)", Tool: "curl", Expected: at.expect}
		switch {
		case len(changed) > 0 || c.status/100 == 2:
			row.Verdict, row.Observed = FailOpen, c.outcome()+"; changed: "+orNone(strings.Join(changed, ", "))
		case c.outcome() == "409 conflict":
			row.Verdict, row.Observed = Pass, c.outcome()+"; stream configuration, record and history unchanged"
		default:
			row.Verdict, row.Observed = FailDenial, c.outcome()
		}
		rep.Add(row)
	}
}

// roomRecord is a room's record as its owner sees it, as JSON.
func (e *env) roomRecord(owner *user, room string) string {
	var ri wire.RoomInfo
	if st, code := e.api(owner, "GET", "/v1/rooms/"+room, nil, &ri); st != http.StatusOK {
		return fmt.Sprintf("%d %s", st, code)
	}
	b, _ := json.Marshal(ri.Room)
	return string(b)
}

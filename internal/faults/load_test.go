package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// acked is what the load was told was done. The after lists are the
// operations acknowledged after the fault began (also in msgs, users and
// rooms); failed counts the operations that failed after it, by what the
// client was told.
type acked struct {
	msgs, users, rooms                []string
	msgsAfter, usersAfter, roomsAfter []string
	failed                            map[string]int
	sinceFault                        map[string]time.Duration // of each operation acknowledged after the fault
	byPhase                           map[string]string        // acknowledged in each phase after the fault ("12 msgs, 3 users, 0 rooms")
	msgIDs                            map[string]string        // each acknowledged message's id (Nats-Msg-Id), by its text
}

// load creates a room, then sends messages one at a time, adds users and
// creates rooms concurrently for 3 s, counting what was acknowledged; then
// it calls cut (the fault) and stops.
func load(ctx context.Context, t *testing.T, cfg client.Config, cut func()) (acked, string) {
	t.Helper()
	a, room := loadAround(ctx, t, cfg, 3*time.Second, cut, nil)
	a.failed = nil // nothing is acknowledged after a power cut: no after-fault counts
	return a, room
}

// loadAround is load with the fault in the middle: it loads for before,
// calls fault, goes on loading while during runs (nil: not at all), then
// stops. An operation acknowledged after fault was called counts as
// acknowledged after the fault, one that failed then is counted by kind.
// during may name the phases of the fault as they begin (phase): the
// operations acknowledged in each are counted too.
func loadAround(ctx context.Context, t *testing.T, cfg client.Config, before time.Duration, fault func(), during func(phase func(string))) (acked, string) {
	t.Helper()
	admin, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	room, err := admin.CreateRoom(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	a := acked{failed: map[string]int{}, sinceFault: map[string]time.Duration{}, msgIDs: map[string]string{}}
	var faultAt time.Time // under mu; zero until the fault
	type count struct{ msgs, users, rooms int }
	phase, phases, perPhase := "", []string{}, map[string]*count{} // under mu
	setPhase := func(p string) {
		mu.Lock()
		defer mu.Unlock()
		phase, phases, perPhase[p] = p, append(phases, p), &count{}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	op := func(kind string, f func(ctx context.Context, i int) (string, error), into, after *[]string, n func(*count) *int) {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			octx, ocancel := context.WithTimeout(ctx, 3*time.Second)
			v, err := f(octx, i)
			ocancel()
			mu.Lock()
			late := !faultAt.IsZero()
			switch {
			case err == nil:
				*into = append(*into, v)
				if late {
					*after = append(*after, v)
					a.sinceFault[v] = time.Since(faultAt)
					if c := perPhase[phase]; c != nil {
						*n(c)++
					}
				}
			case late:
				a.failed[kind+": "+failure(err)]++
			}
			mu.Unlock()
			if err != nil && late {
				time.Sleep(50 * time.Millisecond) // a failing node answers at once: do not spin
			}
		}
	}
	wg.Add(3)
	go op("message", func(ctx context.Context, i int) (string, error) {
		text := fmt.Sprintf("m-%06d", i)
		id, err := admin.Send(ctx, room.ID, "", []byte(text))
		if err == nil {
			mu.Lock()
			a.msgIDs[text] = id
			mu.Unlock()
		}
		return text, err
	}, &a.msgs, &a.msgsAfter, func(c *count) *int { return &c.msgs })
	go op("user", func(ctx context.Context, i int) (string, error) {
		id, err := identity.Generate()
		if err != nil {
			return "", err
		}
		h := fmt.Sprintf("u-%d", i)
		_, err = admin.AddUser(ctx, h, id.SignPub().String(), client.RoleMember)
		return h, err
	}, &a.users, &a.usersAfter, func(c *count) *int { return &c.users })
	go op("room", func(ctx context.Context, i int) (string, error) {
		rm, err := admin.CreateRoom(ctx, "r")
		return rm.ID, err
	}, &a.rooms, &a.roomsAfter, func(c *count) *int { return &c.rooms })

	time.Sleep(before) // the load's length: what the experiment measures, not a wait for a condition
	mu.Lock()
	faultAt = time.Now()
	mu.Unlock()
	fault()
	if during != nil {
		during(setPhase)
	}
	close(stop)
	wg.Wait()
	if len(phases) > 0 {
		a.byPhase = map[string]string{}
		for _, p := range phases {
			c := perPhase[p]
			a.byPhase[p] = fmt.Sprintf("%d msgs, %d users, %d rooms", c.msgs, c.users, c.rooms)
		}
	}
	return a, room.ID
}

// failure names what a failed operation was told: the SDK's sentinel, the
// HTTP status and API code, or a timeout.
func failure(err error) string {
	var ae *client.APIError
	switch {
	case errors.Is(err, client.ErrDiskFull):
		return "message refused: disk full (relay 507)"
	case errors.Is(err, client.ErrQuotaExceeded):
		return "quota exceeded"
	case errors.As(err, &ae):
		return fmt.Sprintf("%d %s", ae.Status, ae.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout (3 s)"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:] // the innermost cause: the part without ids
	}
	return "error: " + s
}

// verify reads the room from the start and looks every acknowledged user
// and room up, and counts what is missing or repeated.
func verify(ctx context.Context, t *testing.T, cfg client.Config, room string, a acked, r *Result) {
	t.Helper()
	r.AckedMsgs, r.AckedUsers, r.AckedRooms = len(a.msgs), len(a.users), len(a.rooms)
	admin, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	seen := map[string]int{}
	var reports []string
	var lmu sync.Mutex
	last := time.Now()
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- admin.Listen(lctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) {
			lmu.Lock()
			reports = append(reports, err.Error())
			lmu.Unlock()
		}}, func(m client.Message) {
			lmu.Lock()
			seen[string(m.Data)]++
			last = time.Now()
			lmu.Unlock()
		})
	}()
	harness.Eventually(t, 2*time.Minute, func() bool {
		lmu.Lock()
		defer lmu.Unlock()
		return time.Since(last) > 3*time.Second // nothing more for 3 s: the history is read
	}, "reading the room's history")
	lcancel()
	var ae *client.APIError
	if err := <-done; errors.Is(err, client.ErrRemoved) || errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + "the load's room itself was lost"
	} else if err != nil {
		t.Errorf("listen after the restart: %v", err)
	}
	lmu.Lock()
	defer lmu.Unlock()
	lost := func(want []string, have func(string) bool) int {
		n := 0
		for _, x := range want {
			if !have(x) {
				n++
			}
		}
		return n
	}
	hasMsg := func(m string) bool { return seen[m] > 0 }
	r.LostMsgs = lost(a.msgs, hasMsg)
	for _, c := range seen {
		if c > 1 {
			r.DupMsgs += c - 1
		}
	}
	all, err := admin.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, x := range all {
		users[x.Handle] = true
	}
	hasUser := func(h string) bool { return users[h] }
	r.LostUsers = lost(a.users, hasUser)
	rl, err := admin.ListRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rooms := map[string]bool{}
	for _, x := range rl {
		rooms[x.ID] = true
	}
	hasRoom := func(id string) bool { return rooms[id] }
	r.LostRooms = lost(a.rooms, hasRoom)
	if a.failed != nil {
		r.After = &AfterFault{
			Msgs: len(a.msgsAfter), Users: len(a.usersAfter), Rooms: len(a.roomsAfter),
			LostMsgs: lost(a.msgsAfter, hasMsg), LostUsers: lost(a.usersAfter, hasUser), LostRooms: lost(a.roomsAfter, hasRoom),
			Failed: a.failed, Acked: a.byPhase,
		}
		var missing []string
		for _, w := range [][]string{a.msgsAfter, a.usersAfter, a.roomsAfter} {
			for _, v := range w {
				if !hasMsg(v) && !hasUser(v) && !hasRoom(v) {
					missing = append(missing, fmt.Sprintf("%s acknowledged %v after the fault", v, a.sinceFault[v].Round(time.Millisecond)))
				}
			}
		}
		if len(missing) > 0 {
			r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + "missing: " + strings.Join(missing[:min(len(missing), 5)], ", ")
		}
	}
	if len(reports) > 0 {
		r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + fmt.Sprintf("the reader reported %d problems, first: %s", len(reports), reports[0])
	}
}

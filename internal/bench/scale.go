package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// The scale scenario measures how each cost grows with the number of rooms,
// of a user's rooms and of a room's rotations, on one SQLite node
// (docs/BENCHMARKS.md, "Scale"). It is a benchmark: it reports figures and
// never judges them.

// ScaleOptions sizes the scale scenario.
type ScaleOptions struct {
	Bin         string // membershipd binary
	Rooms       int    // rooms on the node (100,000)
	UserRooms   int    // rooms of the user whose login is timed (10,000), part of Rooms
	Changes     int    // membership changes timed on a live connection (200)
	Rotations   int    // rotations of the room a fresh client then sends in (10,000)
	Concurrency int    // clients creating rooms at once (16)
	Logins      int    // logins timed per user (50)
	Progress    func(string)
}

// QuickScale is a smoke-sized scale run (seconds).
func QuickScale(o ScaleOptions) ScaleOptions {
	o.Rooms, o.UserRooms, o.Changes, o.Rotations, o.Logins = 300, 100, 20, 50, 10
	return o
}

// ScaleReport holds the scale scenario's figures.
type ScaleReport struct {
	Rooms          int     `json:"rooms"`
	CreateSeconds  float64 `json:"create_seconds"`
	RoomsPerSecond float64 `json:"rooms_per_second"`
	RSSKiB         int64   `json:"rss_kib"`           // after creating every room
	RestartSeconds float64 `json:"restart_seconds"`   // process start to /healthz 200
	RestartRSSKiB  int64   `json:"restart_rss_kib"`   // right after the restart
	UserRooms      int     `json:"user_rooms"`        // rooms of the user whose login is timed
	LoginManyMs    float64 `json:"login_many_ms"`     // p50 login of that user
	LoginOneMs     float64 `json:"login_one_ms"`      // p50 login of a user in one room
	LoginFailures  int     `json:"login_failures"`    // logins that failed (either user)
	Changes        int     `json:"changes"`           // membership changes timed
	ChangeP50Ms    float64 `json:"change_p50_ms"`     // add → first send stored
	ChangeP99Ms    float64 `json:"change_p99_ms"`     //
	RemoveP50Ms    float64 `json:"remove_p50_ms"`     // removal answered → next send refused
	RemoveP99Ms    float64 `json:"remove_p99_ms"`     //
	Disconnects    int     `json:"disconnects"`       // of the changed user's connection
	OtherRoomGapMs float64 `json:"other_room_gap_ms"` // longest gap between the user's sends in another room meanwhile
	Rotations      int     `json:"rotations"`
	RotateSeconds  float64 `json:"rotate_seconds"`
	FirstSendMs    float64 `json:"first_send_ms"` // fresh client: dial + first send after the rotations
}

// scaleNode is the node under measurement, restartable on its state.
type scaleNode struct {
	bin, dir string
	proc     *harness.Process
}

func (n *scaleNode) start(ctx context.Context) (time.Duration, error) {
	args := []string{"--bind", "127.0.0.1", "--http-port", "0", "--nats-port", "0", "--data-dir", filepath.Join(n.dir, "local_files"),
		"--bus-auth", "enforce", "--store", "sqlite", "--log-format", "json", "--log-level", "info"}
	args = append(args, noRateLimits(n.bin)...)
	begin := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	p, err := harness.Start(rctx, n.bin, n.dir, nil, args...)
	if err != nil {
		return 0, err
	}
	n.proc = p
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := hc.Get(p.HTTPURL + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(begin), nil
			}
		}
		select {
		case <-rctx.Done():
			return 0, fmt.Errorf("not healthy: %w", rctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (n *scaleNode) config(id *identity.Identity) client.Config {
	return client.Config{Identity: id, Servers: []string{n.proc.HTTPURL}, NATS: []string{n.proc.NATSURL}, Timeout: time.Minute, RoomCacheTTL: time.Hour}
}

// RunScale runs the scale scenario on a fresh SQLite node.
func RunScale(ctx context.Context, o ScaleOptions) (*ScaleReport, error) {
	say := o.Progress
	if say == nil {
		say = func(string) {}
	}
	o.Concurrency = max(o.Concurrency, 1)
	dir, err := os.MkdirTemp("", "unibus-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	n := &scaleNode{bin: o.Bin, dir: dir}
	if _, err := n.start(ctx); err != nil {
		return nil, err
	}
	defer func() { n.proc.Stop() }()
	admID, err := identity.Load(filepath.Join(dir, "local_files", "admin.id"))
	if err != nil {
		return nil, err
	}
	admin, err := client.Dial(ctx, n.config(admID))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	rep := &ScaleReport{Rooms: o.Rooms, UserRooms: o.UserRooms, Changes: o.Changes, Rotations: o.Rotations}

	// Users: the creators (creator 0 is the user in UserRooms rooms) and
	// a user in one room.
	newUser := func(handle string) (*identity.Identity, *client.Client, error) {
		id, err := identity.Generate()
		if err != nil {
			return nil, nil, err
		}
		if _, err := admin.AddUser(ctx, handle, id.SignPub().String(), client.RoleMember); err != nil {
			return nil, nil, err
		}
		c, err := client.Dial(ctx, n.config(id))
		return id, c, err
	}
	creators := make([]*client.Client, o.Concurrency)
	ids := make([]*identity.Identity, o.Concurrency)
	for i := range creators {
		if ids[i], creators[i], err = newUser(fmt.Sprintf("scale-%d", i)); err != nil {
			return nil, err
		}
		defer creators[i].Close()
	}
	oneID, one, err := newUser("scale-one")
	if err != nil {
		return nil, err
	}
	defer one.Close()
	if _, err := one.CreateRoom(ctx, "only"); err != nil {
		return nil, err
	}

	// 1. Rooms: creator 0 makes UserRooms of them, the others the rest.
	say(fmt.Sprintf("scale: creating %d rooms with %d clients", o.Rooms, o.Concurrency))
	var made atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	rest := max(o.Rooms-o.UserRooms, 0)
	for i, c := range creators {
		quota := rest / max(o.Concurrency-1, 1)
		if i == 0 {
			quota = o.UserRooms
		} else if i == 1 {
			quota += rest % max(o.Concurrency-1, 1)
		}
		if o.Concurrency == 1 {
			quota = o.Rooms
		}
		wg.Go(func() {
			for k := 0; k < quota && ctx.Err() == nil; k++ {
				if _, err := c.CreateRoom(ctx, fmt.Sprintf("r%d-%d", i, k)); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("create room: %w", err) })
					return
				}
				if v := made.Add(1); v%10000 == 0 {
					say(fmt.Sprintf("scale: %d rooms", v))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	rep.CreateSeconds = time.Since(start).Seconds()
	rep.RoomsPerSecond = float64(made.Load()) / rep.CreateSeconds
	rep.RSSKiB = procStatusKiB(n.proc.PID(), "VmRSS")

	// 2. Restart on that state.
	say("scale: restarting")
	admin.Close()
	for _, c := range creators {
		c.Close()
	}
	one.Close()
	if err := n.proc.Stop(); err != nil {
		return nil, err
	}
	took, err := n.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	rep.RestartSeconds = took.Seconds()
	rep.RestartRSSKiB = procStatusKiB(n.proc.PID(), "VmRSS")
	if admin, err = client.Dial(ctx, n.config(admID)); err != nil {
		return nil, err
	}
	defer admin.Close()

	// 3. Logins: the user in UserRooms rooms against the user in one.
	say("scale: logins")
	login := func(id *identity.Identity) (float64, int) {
		var ds []time.Duration
		fails := 0
		for range max(o.Logins, 1) {
			t0 := time.Now()
			nc, err := nats.Connect(n.proc.NATSURL, nats.Nkey(id.NKey(), id.SignNonce), nats.Timeout(10*time.Second))
			if err != nil {
				fails++
				continue
			}
			if err := nc.Flush(); err != nil { // the first PING: a slow login fails here
				fails++
			}
			ds = append(ds, time.Since(t0))
			nc.Close()
		}
		return percentileMs(ds, 50), fails
	}
	var f1, f2 int
	rep.LoginManyMs, f1 = login(ids[0])
	rep.LoginOneMs, f2 = login(oneID)
	rep.LoginFailures = f1 + f2

	// 4. Membership changes on a live connection.
	say(fmt.Sprintf("scale: %d membership changes", o.Changes))
	if err := scaleChanges(ctx, n, o, rep, newUser); err != nil {
		return nil, err
	}

	// 5. A fresh client's first send after many rotations.
	say(fmt.Sprintf("scale: %d rotations", o.Rotations))
	if err := scaleRotations(ctx, n, o, rep, newUser); err != nil {
		return nil, err
	}
	return rep, nil
}

// scaleChanges adds a user with a live connection to rooms and removes it,
// timing each change until the user's next send shows it, while the user
// keeps sending in a room of its own.
func scaleChanges(ctx context.Context, n *scaleNode, o ScaleOptions, rep *ScaleReport, newUser func(string) (*identity.Identity, *client.Client, error)) error {
	_, owner, err := newUser("scale-owner")
	if err != nil {
		return err
	}
	defer owner.Close()
	mID, _, err := newUser("scale-mover")
	if err != nil {
		return err
	}
	cfg := n.config(mID)
	mover, err := client.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer mover.Close()
	var disconnects atomic.Int64
	watch, err := nats.Connect(n.proc.NATSURL, nats.Nkey(mID.NKey(), mID.SignNonce),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnects.Add(1) }))
	if err != nil {
		return err
	}
	defer watch.Close()
	own, err := mover.CreateRoom(ctx, "own")
	if err != nil {
		return err
	}
	// The mover's steady sends in its own room, and the longest gap.
	bg, stop := context.WithCancel(ctx)
	var gap atomic.Int64
	var sends sync.WaitGroup
	sends.Go(func() {
		last := time.Now()
		for bg.Err() == nil {
			if _, err := mover.Send(bg, own.ID, "", []byte("tick")); err != nil {
				continue
			}
			if d := time.Since(last); int64(d) > gap.Load() {
				gap.Store(int64(d))
			}
			last = time.Now()
			time.Sleep(20 * time.Millisecond)
		}
	})
	var adds, removes []time.Duration
	for i := range o.Changes {
		r, err := owner.CreateRoom(ctx, fmt.Sprintf("change-%d", i))
		if err != nil {
			stop()
			return err
		}
		t0 := time.Now()
		if err := owner.AddMember(ctx, r.ID, mID.SignPub().String(), client.RoomMember); err != nil {
			stop()
			return err
		}
		if _, err := mover.Send(ctx, r.ID, "", []byte("joined")); err != nil {
			stop()
			return fmt.Errorf("send right after being added: %w", err)
		}
		adds = append(adds, time.Since(t0))
		if err := owner.RemoveMember(ctx, r.ID, mID.SignPub().String()); err != nil {
			stop()
			return err
		}
		t1 := time.Now()
		if _, err := mover.Send(ctx, r.ID, "", []byte("left")); !errors.Is(err, client.ErrNotMember) {
			stop()
			return fmt.Errorf("send right after the removal: %v, want refused as not a member", err)
		}
		removes = append(removes, time.Since(t1))
	}
	stop()
	sends.Wait()
	rep.ChangeP50Ms, rep.ChangeP99Ms = percentileMs(adds, 50), percentileMs(adds, 99)
	rep.RemoveP50Ms, rep.RemoveP99Ms = percentileMs(removes, 50), percentileMs(removes, 99)
	rep.Disconnects = int(disconnects.Load())
	rep.OtherRoomGapMs = float64(gap.Load()) / 1e6
	return nil
}

// scaleRotations rotates one room many times, then times a fresh client's
// dial and first send in it.
func scaleRotations(ctx context.Context, n *scaleNode, o ScaleOptions, rep *ScaleReport, newUser func(string) (*identity.Identity, *client.Client, error)) error {
	_, owner, err := newUser("scale-rotator")
	if err != nil {
		return err
	}
	defer owner.Close()
	fID, fc, err := newUser("scale-fresh")
	if err != nil {
		return err
	}
	fc.Close()
	r, err := owner.CreateRoom(ctx, "rotated")
	if err != nil {
		return err
	}
	if err := owner.AddMember(ctx, r.ID, fID.SignPub().String(), client.RoomMember); err != nil {
		return err
	}
	t0 := time.Now()
	for range o.Rotations {
		if err := owner.Rotate(ctx, r.ID); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	rep.RotateSeconds = time.Since(t0).Seconds()
	t1 := time.Now()
	fresh, err := client.Dial(ctx, n.config(fID))
	if err != nil {
		return err
	}
	defer fresh.Close()
	if _, err := fresh.Send(ctx, r.ID, "", []byte("first")); err != nil {
		return fmt.Errorf("fresh client's first send: %w", err)
	}
	rep.FirstSendMs = float64(time.Since(t1).Microseconds()) / 1000
	return nil
}

// percentileMs is the p-th percentile of ds in milliseconds (0 for none).
func percentileMs(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return float64(s[max(i, 0)].Microseconds()) / 1000
}

// WriteScaleTable prints the scale report beside the targets it is
// measured against.
func (r *ScaleReport) WriteScaleTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, `Scale (one SQLite node)                                   measured      target
  rooms created per second (%d rooms)                     %10.0f      >= 1,000
  RSS after %d rooms (MiB)                                %10.1f      <= 256
  restart to healthy (s)                                  %10.2f      <= 5
  RSS after the restart (MiB)                             %10.1f
  login p50, user in %d rooms (ms)                        %10.2f
  login p50, user in 1 room (ms)                          %10.2f
  ratio                                                   %10.2f      <= 10
  logins failed                                           %10d      0
  membership change effective p50 / p99 (ms, %d changes)  %6.1f / %-6.1f  p99 <= 200
  removal effective p50 / p99 (ms)                        %6.1f / %-6.1f
  disconnects of the changed user's connection            %10d      0
  longest gap in the user's other room (ms)               %10.1f
  %d rotations took (s)                                   %10.1f
  fresh client's dial + first send after them (ms)        %10.1f      <= 100
`, r.Rooms, r.RoomsPerSecond, r.Rooms, float64(r.RSSKiB)/1024, r.RestartSeconds, float64(r.RestartRSSKiB)/1024,
		r.UserRooms, r.LoginManyMs, r.LoginOneMs, r.LoginManyMs/max(r.LoginOneMs, 1e-9), r.LoginFailures,
		r.Changes, r.ChangeP50Ms, r.ChangeP99Ms, r.RemoveP50Ms, r.RemoveP99Ms, r.Disconnects, r.OtherRoomGapMs,
		r.Rotations, r.RotateSeconds, r.FirstSendMs)
	return err
}

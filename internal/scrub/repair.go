package scrub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Conns are the internal identity's connections Repair uses: Control (the
// control account: StateSubject, StepdownSubject) and one per account in
// Accounts, by name (the control connection may be listed again).
type Conns struct {
	Control  *nats.Conn
	Accounts map[string]*nats.Conn
}

// RepairOptions tune Repair.
type RepairOptions struct {
	// Wait bounds each step: a new leader, a replica removed, every
	// replica current again (default 2 minutes).
	Wait  time.Duration
	Check Options
	// Step, if set, is told each step as it begins.
	Step func(stream, step string)
}

// Errors Repair returns; a caller may branch on them.
var (
	// ErrNoQuorum: the cluster has no quorum, or no majority of the
	// stream's replicas agrees now: nothing was changed.
	ErrNoQuorum = errors.New("no quorum of agreeing replicas: nothing was changed")
	// ErrLeaderStuck: the divergent leader was asked to step down and no
	// agreeing replica leads within the wait.
	ErrLeaderStuck = errors.New("the divergent leader did not hand over to an agreeing replica")
)

// peerRemapFailed is JetStream's error code when a peer removal finds no
// server to place the replacement on (every server already holds a
// replica: three nodes, R3).
const peerRemapFailed jetstream.ErrorCode = 10075

// Repair fences and rebuilds the divergent replicas of one stream,
// judged divergent by Check, from the replicas a majority agree on. It
// re-checks first and changes nothing unless the cluster has a quorum and
// a majority of the stream's configured replicas still agree (ErrNoQuorum).
//
//  1. Fence: a divergent leader serves what it lost as missing, so it is
//     asked to step down (the API for that is disabled for every account;
//     the node's Responder does it in-process), and Repair waits until an
//     agreeing replica leads. Raft hands leadership to a current follower,
//     and every replica is current in Raft's sense: it is the store, not
//     the log, that diverged.
//  2. Rebuild: the divergent replica is removed from the stream's peers
//     ($JS.API.STREAM.PEER.REMOVE): JetStream deletes its copy, places a
//     new replica on a server without one and copies the stream to it
//     from the leader. With three servers and R3 there is no such server,
//     and JetStream refuses the removal (peer remap failed); then the
//     stream is scaled down one replica at a time — JetStream always keeps
//     the leader, now an agreeing replica, and deletes the copies it drops
//     — until no divergent replica is left, and scaled back up to its
//     replicas: the new followers copy everything from the leader. In the
//     unlucky case the divergent replica is kept at R2, the stream runs on
//     the leader's copy alone until the scale-up has caught up (seconds
//     for the buckets; the time to copy the stream for a large one).
//     Before each scale-down Repair checks again that the leader agrees
//     with the majority, and stops if it does not.
//  3. Verify: Check again, expecting every replica to agree.
//
// A replica is never repaired from a minority, and nothing is deleted
// that the majority holds: a scale-down keeps the leader's copy.
func Repair(ctx context.Context, c Conns, sr StreamReport, o RepairOptions) error {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Minute
	}
	step := func(s string) {
		if o.Step != nil {
			o.Step(sr.Stream, s)
		}
	}
	nc := c.Accounts[sr.Account]
	if nc == nil {
		return fmt.Errorf("scrub: no connection to account %s", sr.Account)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cur, err := recheck(ctx, c, sr, o.Check)
	if err != nil {
		return err
	}
	if cur.Verdict == Agree {
		step("every replica agrees now: nothing to do")
		return nil
	}
	if cur.Verdict != Diverged {
		return fmt.Errorf("%s: %w", sr.Stream, ErrNoQuorum)
	}
	bad := servers(cur.Diverged)

	// 1. Fence the leader.
	if cur.LeaderDiverged() {
		step("asking the divergent leader " + cur.Leader + " to step down")
		if err := stepdown(ctx, c.Control, cur); err != nil {
			return err
		}
		if cur, err = waitFor(ctx, c, sr, o, func(r StreamReport) bool {
			return r.Verdict == Diverged && r.Leader != "" && slices.Contains(r.Majority, r.Leader)
		}); err != nil {
			return fmt.Errorf("%s: %w (%v)", sr.Stream, ErrLeaderStuck, err)
		}
		step("an agreeing replica leads: " + cur.Leader)
	}

	// 2. Rebuild.
	remapped := true
	for _, b := range bad {
		step("removing " + b + " from the stream's peers")
		err := peerRemove(ctx, nc, sr.Stream, b)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == peerRemapFailed {
			step("no server to place a replacement on (" + apiErr.Description + "): scaling down and up instead")
			remapped = false
			break
		}
		if err != nil {
			return fmt.Errorf("%s: remove peer %s: %w", sr.Stream, b, err)
		}
	}
	if !remapped {
		if err := rescale(ctx, c, js, sr, bad, o, step); err != nil {
			return err
		}
	}

	// 3. Verify.
	step("waiting until every replica agrees")
	if _, err := waitFor(ctx, c, sr, o, func(r StreamReport) bool {
		return r.Verdict == Agree && r.Answered == r.Replicas
	}); err != nil {
		return fmt.Errorf("%s: after the repair: %w", sr.Stream, err)
	}
	step("repaired: every replica agrees")
	return nil
}

// rescale scales the stream down one replica at a time, keeping the
// (agreeing) leader, until no replica in bad is left, then back up. The
// leader is verified once against the majority; once the stream is below
// its replicas there is no majority to ask, so every later step requires
// that same leader (JetStream keeps the leader on a scale-down) and stops
// if leadership moved.
func rescale(ctx context.Context, c Conns, js jetstream.JetStream, sr StreamReport, bad []string, o RepairOptions, step func(string)) error {
	info, err := streamInfo(ctx, js, sr.Stream)
	if err != nil {
		return err
	}
	orig := info.Config.Replicas
	cur, err := recheck(ctx, c, sr, o.Check)
	if err != nil {
		return err
	}
	if cur.Verdict != Diverged || !slices.Contains(cur.Majority, cur.Leader) {
		return fmt.Errorf("%s: before scaling down: the leader %s is not one of an agreeing majority (%s): %w", sr.Stream, cur.Leader, cur.Verdict, ErrNoQuorum)
	}
	good := cur.Leader
	for r := orig - 1; r >= 1; r-- {
		if info, err = streamInfo(ctx, js, sr.Stream); err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader != good {
			return fmt.Errorf("%s: leadership moved from %s during the repair: stopped at R%d; run the check again", sr.Stream, good, r+1)
		}
		step(fmt.Sprintf("scaling R%d -> R%d (the leader %s keeps its copy)", r+1, r, good))
		peers, err := setReplicas(ctx, js, sr.Stream, r, o.Wait)
		if err != nil {
			return err
		}
		if peers[0] != good {
			return fmt.Errorf("%s: leadership moved from %s to %s during the scale-down: stopped at R%d; run the check again", sr.Stream, good, peers[0], r)
		}
		if !slices.ContainsFunc(peers, func(p string) bool { return slices.Contains(bad, p) }) {
			break
		}
	}
	step(fmt.Sprintf("scaling back to R%d: new replicas copy the stream from the leader", orig))
	_, err = setReplicas(ctx, js, sr.Stream, orig, o.Wait)
	return err
}

// setReplicas updates the stream's replicas and waits until the stream
// runs with them, every follower current; it returns the peers (leader
// first).
func setReplicas(ctx context.Context, js jetstream.JetStream, stream string, replicas int, wait time.Duration) ([]string, error) {
	info, err := streamInfo(ctx, js, stream)
	if err != nil {
		return nil, err
	}
	cfg := info.Config
	cfg.Replicas = replicas
	uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = js.UpdateStream(uctx, cfg)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s: set replicas to %d: %w", stream, replicas, err)
	}
	deadline := time.Now().Add(wait)
	for {
		info, err := streamInfo(ctx, js, stream)
		if err == nil && info.Config.Replicas == replicas && info.Cluster != nil && info.Cluster.Leader != "" &&
			info.Cluster.Desired == nil && len(info.Cluster.Replicas) == replicas-1 {
			peers := []string{info.Cluster.Leader}
			current := true
			for _, p := range info.Cluster.Replicas {
				peers = append(peers, p.Name)
				current = current && p.Current && !p.Offline
			}
			if current {
				return peers, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: not at R%d with every replica current after %v (last error: %v)", stream, replicas, wait, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%s: stream info: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// peerRemove asks the meta leader to remove server from the stream's peers.
func peerRemove(ctx context.Context, nc *nats.Conn, stream, server string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"peer": server})
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.PEER.REMOVE."+stream, body)
	if err != nil {
		return err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Success bool                `json:"success"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	if !resp.Success {
		return errors.New("peer removal not confirmed")
	}
	return nil
}

// stepdown asks the leader's node to step down from leading the stream.
func stepdown(ctx context.Context, nc *nats.Conn, sr StreamReport) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, _ := json.Marshal(StepdownRequest{Server: sr.Leader, Account: sr.Account, Stream: sr.Stream})
	m, err := nc.RequestWithContext(ctx, StepdownSubject, body)
	if err != nil {
		return fmt.Errorf("%s: ask %s to step down: %w", sr.Stream, sr.Leader, err)
	}
	var reply StepdownReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("%s: step down: %w", sr.Stream, err)
	}
	if reply.Err != "" {
		return fmt.Errorf("%s: %s could not step down: %s", sr.Stream, sr.Leader, reply.Err)
	}
	return nil
}

// recheck runs Check and returns the stream's fresh report; a cluster
// without quorum is ErrNoQuorum.
func recheck(ctx context.Context, c Conns, sr StreamReport, o Options) (StreamReport, error) {
	r, err := Check(ctx, c.Control, o)
	if err != nil {
		return StreamReport{}, err
	}
	if !r.Quorum {
		return StreamReport{}, fmt.Errorf("%s: the cluster has no quorum: %w", sr.Stream, ErrNoQuorum)
	}
	for _, s := range r.Streams {
		if s.Account == sr.Account && s.Stream == sr.Stream {
			return s, nil
		}
	}
	return StreamReport{}, fmt.Errorf("%s: no longer reported by any node", sr.Stream)
}

// waitFor polls one round at a time until ok holds for the stream.
func waitFor(ctx context.Context, c Conns, sr StreamReport, o RepairOptions, ok func(StreamReport) bool) (StreamReport, error) {
	deadline := time.Now().Add(o.Wait)
	var last StreamReport
	for {
		views, err := Collect(ctx, c.Control, o.Check.Wait)
		if err == nil {
			for _, s := range Compare(views).Streams {
				if s.Account == sr.Account && s.Stream == sr.Stream {
					last = s
					if ok(s) {
						return s, nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("not reached within %v; last seen: %s", o.Wait, last)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func servers(rs []Replica) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Server)
	}
	return s
}

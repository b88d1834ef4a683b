package kvstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// settlePoll is how often DescribeReplication asks the leader again.
const settlePoll = 100 * time.Millisecond

// DescribeReplication describes a bucket's stream from its leader's stream
// info, in one line such as
//
//	KV_UNIBUS_users: leader=n1 followers_current=2/2 msgs=5 (replicated, HA)
//
// A follower that has not yet applied a write just made is not current:
// it asks again for up to settle for every follower to catch up, then
// describes what it sees. The admin commands print it after a write.
func DescribeReplication(ctx context.Context, stream jetstream.Stream, settle time.Duration) (string, error) {
	deadline := time.Now().Add(settle)
	for {
		line, done, err := describeReplicationOnce(ctx, stream)
		if err != nil || done || time.Now().After(deadline) {
			return line, err
		}
		t := time.NewTimer(settlePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return line, ctx.Err()
		case <-t.C:
		}
	}
}

func describeReplicationOnce(ctx context.Context, stream jetstream.Stream) (string, bool, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return "", false, err
	}
	leader, current, followers := "", 0, 0
	if c := info.Cluster; c != nil {
		leader = c.Leader
		for _, p := range c.Replicas {
			followers++
			if p.Current {
				current++
			}
		}
	}
	verdict := "single replica, NOT HA"
	switch r := info.Config.Replicas; {
	case r >= 3 && followers == r-1 && current == followers:
		verdict = "replicated, HA"
	case r >= 2:
		verdict = "replicated, DEGRADED: not every replica is current"
	}
	line := fmt.Sprintf("%s: leader=%s followers_current=%d/%d msgs=%d (%s)", info.Config.Name, leader, current, followers, info.State.Msgs, verdict)
	return line, current == followers, nil
}

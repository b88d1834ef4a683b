package kvstore_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store/kvstore"
)

// DescribeReplication names the stream, its leader and its messages, and
// calls a single replica what it is.
func TestDescribeReplication(t *testing.T) {
	s, _ := openStore(t)
	addUsers(t, s, alice)
	line, err := kvstore.DescribeReplication(t.Context(), s.StreamFor(kvstore.BucketUsers), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^KV_UNIBUS_users: leader=\S* followers_current=0/0 msgs=2 \(single replica, NOT HA\)$`)
	if !want.MatchString(line) {
		t.Fatalf("line %q, want %v", line, want)
	}
}

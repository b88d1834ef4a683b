package daemon_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: Close
// must wait for every goroutine the daemon started, and the stores, the
// NATS node and the connections must stop theirs.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

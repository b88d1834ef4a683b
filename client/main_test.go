package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them:
// Listen must end its own, its pipeline's and its listeners' goroutines
// before it returns, and Close must end the data-plane connection's and
// the idle control-plane connections'. The servers the tests start are
// other processes, or in-process daemons that Close waits for.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

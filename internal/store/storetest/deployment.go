package storetest

import (
	"sync"

	"github.com/unibus/unibus/internal/store"
)

var deploymentTests = []test{
	{"DeploymentIDConcurrentFirstCalls", testDeploymentIDConcurrentFirstCalls},
	{"DeploymentIDStable", testDeploymentIDStable},
}

// validDeploymentID checks the form by hand rather than through the
// package's own validator.
func validDeploymentID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Concurrent first calls, through two handles on the same state (two
// nodes, or a server and an admin tool), all get the same id.
func testDeploymentIDConcurrentFirstCalls(f *fixture) {
	const n = 16
	other := f.reopen()
	ids := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		s := f.s
		if i%2 == 1 {
			s = other
		}
		wg.Go(func() {
			<-start
			ids[i], errs[i] = s.DeploymentID(f.ctx)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			f.t.Fatalf("DeploymentID call %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			f.t.Fatalf("concurrent first calls disagree: %q and %q", ids[0], ids[i])
		}
	}
	if !validDeploymentID(ids[0]) {
		f.t.Errorf("deployment id %q is not 32 lowercase hex characters", ids[0])
	}
}

// The id is made once and is the same at every later call, on every
// handle, whatever else is written; making it is not a change Watch
// reports.
func testDeploymentIDStable(f *fixture) {
	rec := f.watch(f.s)
	id, err := f.s.DeploymentID(f.ctx)
	if err != nil {
		f.t.Fatalf("DeploymentID: %v", err)
	}
	if !validDeploymentID(id) {
		f.t.Fatalf("deployment id %q is not 32 lowercase hex characters", id)
	}
	alice := f.addUser("alice", store.RoleAdmin).SignPub
	f.createRoom("ops", alice)
	for _, s := range []store.Store{f.s, f.reopen(), f.s} {
		got, err := s.DeploymentID(f.ctx)
		if err != nil || got != id {
			f.t.Fatalf("DeploymentID later: %q, %v; want %q", got, err, id)
		}
	}
	// Watch reports the user, then the room, and nothing for the id.
	next := f.await(rec, 0, "the user added", func(c store.Change) bool { return c.Kind == store.ChangeUser && c.User == alice })
	f.await(rec, next, "the room created", func(c store.Change) bool { return c.Kind == store.ChangeRoom })
	for _, c := range rec.snapshot()[:next-1] {
		f.t.Errorf("reported before the user was added, when only the deployment id was made: %+v", c)
	}
}

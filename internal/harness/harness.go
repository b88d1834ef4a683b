// Package harness is the one test harness of the project: it builds the
// commands, starts membershipd as a real process and three-node clusters of
// them on loopback, picks free ports, collects a process's output in a
// locked buffer, gives child processes an environment without the caller's
// UNIBUS_* settings, and waits for conditions (Eventually) instead of
// sleeping.
//
// It does not import package testing: its functions take a TB, which
// testing.TB satisfies, so that the bench — a program — starts membershipd
// with the same code as the tests (Start, BuildCommands, CleanEnv). It is
// not for production code paths: it starts processes and fails tests.
//
// The embedded NATS node for store tests (internal/testnode) and the test
// certificate authority (internal/testpki) are packages of their own.
package harness

// TB is the part of testing.TB the harness uses.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

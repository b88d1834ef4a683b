// Package faults is unibus's fault-injection suite: it runs membershipd
// as an operator would, on real file systems, injects a fault and counts
// what was acknowledged to clients and what is there afterwards.
//
// Every experiment needs root (loop devices, mounts, the FS_IOC_SHUTDOWN
// ioctl). The suite runs with the package's tests:
//
//	go test ./internal/faults                     # the short version (CI): one trial each
//	UNIBUS_FAULT_TRIALS=5 UNIBUS_FAULT_OUT=r.json go test -v -timeout 30m ./internal/faults
//
// Each experiment reports acknowledged / lost / duplicated operations and
// the time to recover; docs/RELIABILITY.md has the results and the method.
// A loss under a policy that promises durability fails the test; under one
// that does not (--js-sync 2m) it is measured and reported, never judged.
package faults

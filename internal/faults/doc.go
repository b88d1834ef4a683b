// Package faults is unibus's fault-injection suite: it runs membershipd
// as an operator would, on real file systems, injects a fault and counts
// what was acknowledged to clients and what is there afterwards. The
// faults: a power cut of one node and of three (FS_IOC_SHUTDOWN without
// log flush, then SIGKILL and a remount), a disk that fails every write
// under a running node (EIO), full disks (one node, three), a damaged
// replica made leader (truncated, bit-flipped), and a partition in network
// namespaces.
//
// Every experiment needs root (loop devices, mounts, the FS_IOC_SHUTDOWN
// ioctl, network namespaces) and runs only when asked for, on its own:
// ./test (the README's test command, which CI runs) runs it after every
// other package, one trial of each experiment, but for the two that fail
// on holes not closed yet, which it leaves out by name
// (docs/RELIABILITY.md, "Open").
//
//	UNIBUS_FAULTS=1 go test ./internal/faults
//	UNIBUS_FAULTS=1 UNIBUS_FAULT_TRIALS=5 UNIBUS_FAULT_OUT=r.json go test -v -timeout 60m ./internal/faults
//
// The loads create a room every few operations as the admin, and room
// creations count against a per-user quota (100): the experiments run
// membershipd with --user-rooms 0 so that the load, not the quota, sets
// what is written.
//
// Each experiment reports acknowledged / lost / duplicated operations and
// the time to recover; docs/RELIABILITY.md has the results and the method.
// A loss under a policy that promises durability fails the test; under one
// that does not (--js-sync 2m) it is measured and reported, never judged.
package faults

// Package testbin is the former name of internal/harness: every name here
// is the harness's own, so that the tests of client, internal/daemon and
// internal/redteam keep compiling until they import harness. It holds no
// code; add nothing to it.
//
// Deprecated: use internal/harness.
package testbin

import "github.com/unibus/unibus/internal/harness"

type (
	// Bus is harness.Bus.
	Bus = harness.Bus
	// Cluster is harness.Cluster.
	Cluster = harness.Cluster
	// Node is harness.Node.
	Node = harness.Node
	// Result is harness.Result.
	Result = harness.Result
)

var (
	// Build is harness.Build.
	Build = harness.Build
	// StartBus is harness.StartBus.
	StartBus = harness.StartBus
	// Run is harness.Run.
	Run = harness.Run
	// Command is harness.Command.
	Command = harness.Command
	// FreePort is harness.FreePort.
	FreePort = harness.FreePort
	// StartCluster is harness.StartCluster.
	StartCluster = harness.StartCluster
	// Where is harness.Where.
	Where = harness.Where
)

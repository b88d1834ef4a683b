// Package jsretrytest helps test the JetStream-backed stores in the state
// jsretry exists for: JetStream that does not answer, so that a store
// never opens.
package jsretrytest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NoJetStream starts a NATS server on a random loopback port with
// JetStream off and returns a connection to it, both closed at the end of
// the test. A store's open on it retries until its bootstrap budget ends,
// as on a cold cluster whose quorum never comes up.
func NoJetStream(t testing.TB) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Package redteam is unibus's attack suite. Its tests start a real
// membershipd process (--bus-auth enforce, TLS certificates from a CA made
// in the test, random loopback ports) and attack it with real external
// peers: the official nats CLI logged in with a member's nkey, curl, and
// openssl. Every attack has an expected denial and a check of its effect
// against the server's real state, and the suite has positive controls, so
// it fails when a denial turns into an acceptance and when the harness
// stops reaching the server at all.
//
// The results form a table (attack, expected denial, observed, result),
// kept in docs/SECURITY-ATTACKS.md: `go test ./internal/redteam` fails when the
// table differs from that file or when any attack was not denied;
// `go test ./internal/redteam -update` (or UNIBUS_REDTEAM_UPDATE=1) rewrites it.
// The tools come from .ci/install-tools; a missing tool fails the suite
// unless UNIBUS_REDTEAM_OPTIONAL=1.
//
// The package's only non-test code is the table (report.go).
package redteam

// Package redteam is unibus's attack suite. Its tests start a real
// membershipd process (--store kv, --bus-auth enforce, TLS certificates
// from a CA made in the test, random loopback ports; internal/harness
// builds and starts it) — on its embedded NATS engine (TestRedTeam), or
// in front of a real nats-server process as its auth callout
// (TestRedTeamExternal, --nats-url; extnatstest starts the server) —
// and attack it with real external peers: the
// official nats CLI logged in with a member's nkey, curl, openssl, the
// unibus CLI and SDK, and, where those cannot express an attack, a raw
// nats.go client or a small man in the middle written in Go.
//
// Every attack has an expected denial and is judged by the victim's state
// as membershipd sees it — its internal identity reads the streams,
// listeners and buckets — not by the attacker's error message alone: a
// room's history intact, a listener's delivered sequence unchanged,
// nothing stored in another room, nothing received after a removal.
// Positive controls keep the harness honest: the suite fails when a
// denial turns into an acceptance and when the harness stops reaching the
// server at all. An observed hole is a failing row, never a skip.
//
// The results form a table (attack, tool, expected denial, observed,
// result) per engine, kept in docs/SECURITY-ATTACKS.md and
// docs/SECURITY-ATTACKS-EXTERNAL.md: `go test ./internal/redteam` fails
// when a table differs from its file or when any attack was not denied;
// `go test ./internal/redteam -update` (or UNIBUS_REDTEAM_UPDATE=1)
// rewrites them. The tools come from .ci/install-tools; a missing tool fails
// the suite unless UNIBUS_REDTEAM_OPTIONAL=1.
//
// The package's only non-test code is the table (report.go).
package redteam

package redteam

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/SECURITY-ATTACKS.md and docs/SECURITY-ATTACKS-EXTERNAL.md from this run (also UNIBUS_REDTEAM_UPDATE=1)")

// The tables' homes, relative to this package: the embedded engine's and
// the external NATS's.
const (
	attacksFile         = "../../docs/SECURITY-ATTACKS.md"
	externalAttacksFile = "../../docs/SECURITY-ATTACKS-EXTERNAL.md"
)

const preamble = `# Red-team attack results

This table is written by the attack suite in ` + "`internal/redteam/`" + `, not by hand:
` + "`go test ./internal/redteam -update`" + ` (or ` + "`UNIBUS_REDTEAM_UPDATE=1`" + `) rewrites it, and
` + "`go test ./internal/redteam`" + ` (run in CI) fails when a result differs from it or when
any attack was not denied.

Each run starts a real ` + "`membershipd`" + ` (` + "`--store kv`" + `, ` + "`--bus-auth enforce`" + `, TLS from a CA
made in the test, random loopback ports) speaking data-plane protocol 2
(docs/DESIGN.md, "Data plane"), with rooms A (alice, owner; dave), B
(bob, owner; mallory), BD (bob, owner; mallory; a stream of its own,
` + "`max_bytes`" + ` set) and C (bob, owner; trudy), and attacks it with real external
peers: the official ` + "`nats`" + ` CLI (natscli ` + NATSCLIVersion + `, logged in with the member's
nkey seed file), ` + "`curl`" + `, ` + "`openssl`" + `, the unibus CLI and SDK, and a raw nats.go
client or a small Go man in the middle where the CLI cannot express the
attack. Every attack is judged by the victim's state as membershipd sees
it (its internal identity reads the streams, consumers and buckets; the
owners read the rooms; the admin reads the users): history intact,
listener state unchanged, nothing stored in another room, nothing
received after a removal. Positive controls show that the same tools do
reach the server. ` + "`{A}`" + `, ` + "`{B}`" + `, ` + "`{BD}`" + `, ` + "`{C}`" + `, ` + "`{alice}`" + `, ` + "`{bob}`" + `, … stand for the
room ids and sign-pubs of the run.

Results: **pass** = denied as expected (or, for a control, allowed);
**FAIL: fail-open** = not denied, or the victim's state changed;
**FAIL: unexpected denial** = denied in another way than this table says;
**FAIL: control** = the harness or the server is broken. Zero fail-opens
are required.

`

const externalPreamble = `# Red-team attack results: membershipd in front of an external NATS

This table is written by the attack suite in ` + "`internal/redteam/`" + ` (TestRedTeamExternal),
not by hand: ` + "`go test ./internal/redteam -update`" + ` (or ` + "`UNIBUS_REDTEAM_UPDATE=1`" + `) rewrites
it, and ` + "`go test ./internal/redteam`" + ` fails when a result differs from it or when any
attack was not denied. It is the suite of [SECURITY-ATTACKS.md](SECURITY-ATTACKS.md), the
same attacks and the same judges, run against membershipd in front of an
external NATS (docs/OPERATIONS.md, "External NATS") instead of its
embedded engine; that file's preamble says how the attacks are made and
judged.

Each run starts a real ` + "`nats-server`" + ` process (the version go.mod requires, one
server, JetStream on, random loopback ports) with unibus's part of the
configuration (what ` + "`membershipd external-nats config`" + ` prints) for credentials
made in the test and TLS on its client port from a CA made in the test,
and a real ` + "`membershipd`" + ` in front of it as its auth callout (` + "`--store kv`" + `,
` + "`--bus-auth enforce`" + `, ` + "`--nats-url tls://…`" + `, ` + "`--nats-creds`" + `, ` + "`--nats-ca`" + `, TLS on its HTTP side
from the same CA). Members log in to the nats-server, which asks
membershipd; the ground truth is membershipd's internal identity
(derived from the credentials) logged in the same way. The second
membershipd of H80–H85 and the one with an expired certificate (T20,
T21, T23) each run in front of a nats-server of their own; the data
plane's certificate is the nats-server's, so T22 aims at a nats-server
serving the expired certificate. X01, a row of this table only, checks
that the data plane attacked was that nats-server and that
membershipd's callout answered its logins. Every row of
SECURITY-ATTACKS.md applies: none of them needs what external mode
leaves out (the per-user connection limit, the refused-login throttle,
the minority fence, the replica scrub).

Results: **pass** = denied as expected (or, for a control, allowed);
**FAIL: fail-open** = not denied, or the victim's state changed;
**FAIL: unexpected denial** = denied in another way than this table says;
**FAIL: control** = the harness or the server is broken. Zero fail-opens
are required.

`

// TestRedTeam runs every attack against membershipd's embedded engine,
// prints the table, fails on any row that did not pass, and compares the
// table with docs/SECURITY-ATTACKS.md.
func TestRedTeam(t *testing.T) {
	runSuite(t, embeddedEngine, attacksFile, preamble)
}

// TestRedTeamExternal runs the same attacks against membershipd in front
// of an external nats-server, and compares the table with
// docs/SECURITY-ATTACKS-EXTERNAL.md.
func TestRedTeamExternal(t *testing.T) {
	runSuite(t, externalEngine, externalAttacksFile, externalPreamble)
}

// runSuite runs every attack on eng, prints the table, fails on any row
// that did not pass, and compares the table with file (or rewrites it).
func runSuite(t *testing.T, eng engine, file, preamble string) {
	if testing.Short() {
		t.Skip("the attack suite takes about a minute; it runs without -short")
	}
	tl := lookTools(t)
	e := setup(t, tl, eng)
	rep := &Report{Normalize: e.norm.Replace}
	// A copy of the env per group, bound to the group's *testing.T.
	on := func(t *testing.T) *env { c := *e; c.t = t; return &c }
	t.Run("attacks", func(t *testing.T) {
		t.Run("slow", func(t *testing.T) { t.Parallel(); on(t).slowAttacks(rep) })
		t.Run("cap", func(t *testing.T) { t.Parallel(); on(t).listenerCap(rep) })
		t.Run("dataplane", func(t *testing.T) {
			t.Parallel()
			g := on(t)
			g.natsControls(rep)
			bobs, l := g.bobsListener(rep)
			attacks := g.natsAttacks(bobs)
			work := make(chan natsAttack)
			var wg sync.WaitGroup
			for range max(4, runtime.GOMAXPROCS(0)) {
				wg.Go(func() {
					for at := range work {
						rep.Add(g.runNATSAttack(at))
					}
				})
			}
			for _, at := range attacks {
				work <- at
			}
			close(work)
			wg.Wait()
			g.consumerAttacks(rep, bobs, l)
			g.replyAttacks(rep, bobs, l)
			g.removalAttacks(rep)
			g.outputAttacks(rep)
			g.replayAttacks(rep)
		})
		t.Run("http", func(t *testing.T) { t.Parallel(); on(t).httpAttacks(rep) })
		t.Run("tls", func(t *testing.T) { t.Parallel(); on(t).tlsAttacks(rep) })
	})
	if eng == externalEngine {
		rep.Add(e.engineControl())
	}

	table := rep.Markdown(preamble)
	t.Logf("attack table:\n%s", table)
	for _, row := range rep.Failures() {
		t.Errorf("%s %s: %s — expected %q, observed %q", row.ID, row.Attack, row.Verdict, row.Expected, row.Observed)
	}
	if t.Failed() && !*update {
		return
	}
	if partialRun() {
		t.Logf("a subset of the suite ran (-run with a subtest pattern): %s not compared", file)
		return
	}
	path := filepath.FromSlash(file)
	if *update || os.Getenv("UNIBUS_REDTEAM_UPDATE") == "1" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (create it with: go test ./internal/redteam -update)", path, err)
	}
	if string(want) != table {
		t.Errorf("%s is out of date; review the difference and run: go test ./internal/redteam -update\n%s", path, diff(string(want), table))
	}
}

// partialRun reports whether -test.run selects subtests only.
func partialRun() bool {
	f := flag.Lookup("test.run")
	return f != nil && strings.Contains(f.Value.String(), "/")
}

// diff lists the lines that differ, for a failure message.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	in := func(lines []string) map[string]bool {
		m := map[string]bool{}
		for _, l := range lines {
			m[l] = true
		}
		return m
	}
	wm, gm := in(w), in(g)
	var b strings.Builder
	for _, l := range w {
		if !gm[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if !wm[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}

// TestMarkdownCells: a cell stays one table cell whatever the tools print.
func TestMarkdownCells(t *testing.T) {
	rep := &Report{}
	rep.Add(Row{ID: "B", Attack: "two\nlines | and a pipe", Verdict: Pass})
	rep.Add(Row{ID: "A", Attack: "first", Verdict: FailOpen})
	got := rep.Markdown("")
	want := "| # | plane | attack | tool | expected denial | observed | result |\n|---|---|---|---|---|---|---|\n" +
		"| A |  | first |  |  |  | FAIL: fail-open |\n| B |  | two lines \\| and a pipe |  |  |  | pass |\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if f := rep.Failures(); len(f) != 1 || f[0].ID != "A" {
		t.Fatalf("failures %+v", f)
	}
}

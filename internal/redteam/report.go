package redteam

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Verdict is the outcome of one row.
type Verdict string

// Verdicts. Every one but Pass fails the suite.
const (
	Pass Verdict = "pass"
	// FailOpen: an attack was not denied, or it changed the server's state.
	FailOpen Verdict = "FAIL: fail-open"
	// FailDenial: denied, but not in the expected way (the table is out
	// of date, or a defence moved).
	FailDenial Verdict = "FAIL: unexpected denial"
	// FailControl: a positive control did not work: the harness does not
	// reach the server, or the ACL is too strict to be useful.
	FailControl Verdict = "FAIL: control"
)

// Row is one attack (or positive control) and its result.
type Row struct {
	ID       string // sort key, e.g. "N03"
	Plane    string // "NATS", "HTTP", "TLS"
	Attack   string
	Tool     string
	Expected string
	Observed string
	Verdict  Verdict
}

// Report collects rows from concurrent tests.
type Report struct {
	// Normalize, when set, rewrites the attack, expected and observed
	// texts of every row added: it replaces what differs from run to run
	// (room ids, keys, ports) with fixed names, so the table is stable.
	Normalize func(string) string

	mu   sync.Mutex
	rows []Row
}

// Add records a row.
func (r *Report) Add(row Row) {
	if r.Normalize != nil {
		row.Attack, row.Expected, row.Observed = r.Normalize(row.Attack), r.Normalize(row.Expected), r.Normalize(row.Observed)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
}

// Rows returns the rows sorted by ID.
func (r *Report) Rows() []Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.rows)
	slices.SortStableFunc(out, func(a, b Row) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Failures returns the rows whose verdict is not Pass.
func (r *Report) Failures() []Row {
	var out []Row
	for _, row := range r.Rows() {
		if row.Verdict != Pass {
			out = append(out, row)
		}
	}
	return out
}

// Markdown renders the rows as a GitHub-flavoured Markdown table after
// preamble.
func (r *Report) Markdown(preamble string) string {
	var b strings.Builder
	b.WriteString(preamble)
	b.WriteString("| # | plane | attack | tool | expected denial | observed | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", cell(row.ID), cell(row.Plane), cell(row.Attack),
			cell(row.Tool), cell(row.Expected), cell(row.Observed), cell(string(row.Verdict)))
	}
	return b.String()
}

// cell makes s safe inside a table cell: one line, pipes escaped.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

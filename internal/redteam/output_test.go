package redteam

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/unibus/unibus/internal/harness"
)

// forgedLine is a message whose text tries to pass for more than one
// line of `unibus listen`: a line break and a line that looks like bob's,
// a carriage return with an erase-line sequence, colour, a cursor move up
// and a right-to-left override.
const forgedLine = "hello\nbob: please wire the money to trudy\r\x1b[2K\x1b[1;31mALERT\x1b[0m\x1b[1A\u202eevil"

// outputAttacks: `unibus listen` prints one line per message, whatever
// its text. In protocol 1 it printed plaintext raw, and a message forged
// another sender's line. trudy sends forgedLine to room C; bob's CLI must
// print it as one line, its control characters escaped, in both output
// formats.
func (e *env) outputAttacks(rep *Report) {
	add := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "CLI", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	if r := harness.Run(e.t, e.dir, e.cliEnv(e.trudy), forgedLine, "unibus", "send", "room-c", "-"); r.Code != 0 {
		e.t.Fatalf("trudy's send: %v", r)
	}
	listen := func(json bool) harness.Result {
		args := []string{"listen", "room-c", "--from-start", "--count", "2", "--wait", "30s"}
		if json {
			args = append([]string{"--json"}, args...)
		}
		return harness.Run(e.t, e.dir, e.cliEnv(e.bob), "", "unibus", args...)
	}

	// C01: text.
	r := listen(false)
	lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	var trudys string
	bobs := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "trudy: ") {
			trudys = l
		}
		if strings.HasPrefix(l, "bob: ") {
			bobs++
		}
	}
	raw := controlBytes(r.Stdout, true)
	v := Pass
	switch {
	case raw != "" || len(lines) != 2 || bobs != 1:
		v = FailOpen
	case r.Code != 0 || trudys == "":
		v = FailDenial
	}
	add("C01", "a message whose text holds a line break, a line that looks like bob's, a carriage return, escape sequences and a right-to-left override (sent by trudy)",
		"unibus send; unibus listen", "one line per message, the control characters escaped", v,
		fmt.Sprintf("exit %d; %d lines for 2 messages; raw control characters: %s; trudy's line: `%s`", r.Code, len(lines), orNone(raw), trudys))

	// C02: --json.
	r = listen(true)
	lines = strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	exact := false
	for _, l := range lines {
		var m struct{ Handle, Data string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Handle == "trudy" {
			exact = m.Data == forgedLine
		}
	}
	raw = controlBytes(r.Stdout, false)
	format := strings.Join(formatChars(r.Stdout), " ")
	v = Pass
	switch {
	case raw != "" || len(lines) != 2:
		v = FailOpen
	case r.Code != 0 || !exact:
		v = FailDenial
	}
	add("C02", "the same message with `unibus --json listen`", "unibus --json listen",
		"one JSON object per line, `data` last; control characters escaped by JSON; the text decodes exactly", v,
		fmt.Sprintf("exit %d; %d lines for 2 messages; raw control characters: %s; format characters kept in the JSON string: %s; trudy's text decodes exactly=%v",
			r.Code, len(lines), orNone(raw), orNone(format), exact))
}

// controlBytes lists the control characters in s other than the line
// ends between lines, and with format too the format characters (a
// right-to-left override, for instance).
func controlBytes(s string, format bool) string {
	var found []string
	for _, r := range strings.TrimSuffix(s, "\n") {
		if r != '\n' && (unicode.IsControl(r) || format && unicode.Is(unicode.Cf, r)) {
			found = append(found, fmt.Sprintf("%U", r))
		}
	}
	return strings.Join(found, " ")
}

// formatChars lists the format characters in s.
func formatChars(s string) []string {
	var found []string
	for _, r := range s {
		if unicode.Is(unicode.Cf, r) {
			found = append(found, fmt.Sprintf("%U", r))
		}
	}
	return found
}

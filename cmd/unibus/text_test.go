package main

import (
	"strings"
	"testing"
	"unicode"
)

func TestTerminalText(t *testing.T) {
	for in, want := range map[string]string{
		"hello, bob":                     "hello, bob",
		"ok\nbob: I approve the payment": `ok\nbob: I approve the payment`,
		"\r\x1b[2Kbob: hi":               `\r\x1b[2Kbob: hi`,
		"tab\there":                      `tab\there`,
		"naïve 日本 ✓":                     "naïve 日本 ✓",
		"rtl \u202egnp.exe":              `rtl \u202egnp.exe`,
		"bad \xff byte":                  `bad \xff byte`,
		`a literal \n stays distinct`:    `a literal \\n stays distinct`,
		"nul\x00 and del\x7f":            `nul\x00 and del\x7f`,
	} {
		if got := terminalText([]byte(in)); got != want {
			t.Errorf("terminalText(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzTerminalText: whatever the message, the printed text has no control
// character and no line break.
func FuzzTerminalText(f *testing.F) {
	f.Add([]byte("ok\nbob: x"))
	f.Add([]byte("\r\x1b[2K\u2028\u0085"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := terminalText(b)
		for _, r := range s {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("terminalText(%q) = %q holds %U", b, s, r)
			}
		}
		if strings.ContainsAny(s, "\n\r") {
			t.Fatalf("line break in %q", s)
		}
	})
}

package main

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// terminalText makes message text safe to print one message per line: a
// line break, a carriage return, an escape sequence or any other control
// or invalid byte is written escaped (\n, \r, \x1b, \u202e…), so a message
// can neither start a line that looks like another sender's nor move the
// cursor over its own prefix. Printable text, any script, is kept as is;
// a backslash is doubled so that escaped and literal text differ.
func terminalText(b []byte) string {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			out = append(out, `\x`...)
			out = append(out, "0123456789abcdef"[b[0]>>4], "0123456789abcdef"[b[0]&15])
		case r == '\\':
			out = append(out, `\\`...)
		case r == ' ' || unicode.IsPrint(r):
			out = append(out, b[:n]...)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\n', '\x1b', '\u202e'
			out = append(out, q[1:len(q)-1]...)
		}
		b = b[n:]
	}
	return string(out)
}

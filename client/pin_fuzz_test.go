package client

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/unibus/unibus/identity"
)

// handleRE is the handle syntax (docs/DESIGN.md), which validHandle implements.
var handleRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// FuzzParseKnownKeys parses arbitrary known-keys files. It must never
// panic, and what it accepts holds only well-formed records: valid handles
// and sign-pubs, 64-hex KEM digests, the first record of a name winning.
// Written back by the client (rewrite, then load), the pins are the same.
// validHandle agrees with the handle rule on every line.
func FuzzParseKnownKeys(f *testing.F) {
	pub := strings.Repeat("ab", 32)
	dig := strings.Repeat("0f", 32)
	f.Add([]byte(knownKeysHeader + "\nhandle alice " + pub + "\nkem " + pub + " " + dig + "\n"))
	f.Add([]byte(knownKeysHeader + "\r\n# comment\r\n\r\nhandle bob " + pub + "\r\nhandle bob " + strings.Repeat("cd", 32) + "\n"))
	f.Add([]byte(knownKeysHeader + "\nhandle  alice " + pub + "\n"))
	f.Add([]byte(knownKeysHeader + "\nkem " + pub + " " + strings.ToUpper(dig) + "\n"))
	f.Add([]byte("# unibus known keys v2\n"))
	f.Add([]byte(knownKeysHeader + "\n" + strings.Repeat("x", 5000) + "\n"))
	f.Add([]byte(" \n\t"))
	path := filepath.Join(f.TempDir(), "known_keys")
	f.Fuzz(func(t *testing.T, raw []byte) {
		var lines []string // as the parser reads them
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			lines = append(lines, strings.TrimSuffix(sc.Text(), "\r"))
			for _, field := range strings.Split(sc.Text(), " ") {
				if validHandle(field) != handleRE.MatchString(field) {
					t.Fatalf("validHandle(%q) = %v, the rule says otherwise", field, validHandle(field))
				}
			}
		}

		handles, kems, err := parseKnownKeys(raw)
		if err != nil {
			if handles != nil || kems != nil {
				t.Fatal("a refused file returned pins")
			}
			return
		}
		first := map[string]string{}
		for h, sp := range handles {
			if !validHandle(h) {
				t.Fatalf("accepted the handle %q", h)
			}
			if _, err := identity.ParseSignPub(sp); err != nil {
				t.Fatalf("accepted the sign-pub %q for %q", sp, h)
			}
			first[h] = ""
		}
		for sp, d := range kems {
			if _, err := identity.ParseSignPub(sp); err != nil || !isHex64(d) {
				t.Fatalf("accepted the KEM pin %q %q", sp, d)
			}
		}
		// The first record of a name wins.
		for _, line := range lines {
			fs := strings.Split(line, " ")
			if len(fs) == 3 && fs[0] == "handle" {
				if v, ok := first[fs[1]]; ok && v == "" {
					first[fs[1]] = fs[2]
					if handles[fs[1]] != fs[2] {
						t.Fatalf("handle %q is pinned to %q, its first record says %q", fs[1], handles[fs[1]], fs[2])
					}
				}
			}
		}

		// Written back by the client and read again: the same pins.
		os.Remove(path)
		k := &knownKeys{path: path, handles: handles, kems: kems}
		if err := k.rewrite(); err != nil {
			t.Fatal(err)
		}
		back, err := newKnownKeys(path)
		if err != nil {
			t.Fatalf("the rewritten file does not load: %v", err)
		}
		if !maps.Equal(back.handles, handles) || !maps.Equal(back.kems, kems) {
			t.Fatalf("the rewritten file holds other pins:\n%v %v\n%v %v", handles, kems, back.handles, back.kems)
		}
	})
}

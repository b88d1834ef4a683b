package client_test

import (
	"os"
	"strings"
	"testing"
)

// TestPackageDocCodeIsRun: the code in the package comment is the body of
// Example, line for line, so it compiles and runs with the tests.
func TestPackageDocCodeIsRun(t *testing.T) {
	src, err := os.ReadFile("client.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := strings.Cut(string(src), "\npackage client\n")
	var code []string
	for _, l := range strings.Split(doc, "\n") {
		if c, ok := strings.CutPrefix(l, "//\t"); ok {
			code = append(code, strings.TrimSpace(c))
		}
	}
	if len(code) == 0 {
		t.Fatal("no code in the package comment")
	}
	ex, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(ex), "\nfunc Example() {\n")
	body, _, _ = strings.Cut(body, "\n}\n")
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	want := strings.Join(code, "\n")
	if !strings.Contains(strings.Join(lines, "\n"), want) {
		t.Errorf("the package comment's code is not in the body of Example; keep them the same:\n%s", want)
	}
}

package identity

import (
	"strings"
	"testing"
)

func TestValidHandle(t *testing.T) {
	for _, tc := range []struct {
		handle string
		ok     bool
	}{
		{"a", true},
		{"0", true},
		{"a.b-c_d", true},
		{"alice", true},
		{"bob.builder-2", true},
		{strings.Repeat("a", MaxHandleLen), true},
		{strings.Repeat("a", MaxHandleLen+1), false},
		{"", false},
		{"-a", false},
		{".a", false},
		{"_a", false},
		{"A", false},
		{"aB", false},
		{"a b", false},
		{"a/b", false},
		{"a\n", false},
		{"é", false},
		{"a\x00", false},
	} {
		if got := ValidHandle(tc.handle); got != tc.ok {
			t.Errorf("ValidHandle(%q) = %v, want %v", tc.handle, got, tc.ok)
		}
	}
}

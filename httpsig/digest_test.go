package httpsig

import (
	"errors"
	"strings"
	"testing"
)

// TestContentDigestRFC9530 checks the example of RFC 9530 §2 and Appendix B.
func TestContentDigestRFC9530(t *testing.T) {
	const want = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
	body := []byte(`{"hello": "world"}`)
	if got := ContentDigest(body); got != want {
		t.Errorf("ContentDigest: got %s, want %s", got, want)
	}
	if err := checkContentDigest([]string{want}, body); err != nil {
		t.Error(err)
	}
}

func TestCheckContentDigest(t *testing.T) {
	body := []byte(`{"hello": "world"}`)
	const sha256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
	const sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
	tests := []struct {
		name  string
		lines []string
		ok    bool
	}{
		{"sha-256", []string{sha256}, true},
		{"other algorithms ignored", []string{sha512 + ", " + sha256}, true},
		{"over two lines", []string{sha512, sha256}, true},
		{"unknown algorithm ignored", []string{"md5=:AAAA:, " + sha256}, true},
		{"missing", nil, false},
		{"only sha-512", []string{sha512}, false},
		{"wrong digest", []string{ContentDigest([]byte("other"))}, false},
		{"short digest", []string{"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWx:"}, false},
		{"not bytes", []string{`sha-256="X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="`}, false},
		{"inner list", []string{`sha-256=(:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:)`}, false},
		{"unparseable", []string{"sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="}, false},
		{"legacy Digest syntax", []string{"SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="}, false},
		{"too long", []string{sha256 + ", x=\"" + strings.Repeat("a", MaxContentDigestBytes) + "\""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkContentDigest(tt.lines, body)
			if tt.ok && err != nil {
				t.Errorf("got %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrDigest) {
				t.Errorf("got %v, want ErrDigest", err)
			}
		})
	}
}

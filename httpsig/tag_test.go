package httpsig

import (
	"errors"
	"strings"
	"testing"
)

// TestTagBindsTheDeployment: a verifier with a tag accepts only signatures
// with exactly that tag; one without a tag accepts any (the parameter is
// still covered by the signature, so it cannot be changed in transit).
func TestTagBindsTheDeployment(t *testing.T) {
	const staging, production = "unibus/2/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "unibus/2/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	sign := func(tag string) *Signer { s := testSigner(); s.Tag = tag; return s }
	cases := []struct {
		name     string
		signTag  string
		wantTag  string
		want     error
		tampered bool
	}{
		{"same deployment", production, production, nil, false},
		{"signed for staging, sent to production", staging, production, ErrWrongTag, false},
		{"no tag (an older client)", "", production, ErrWrongTag, false},
		{"a tag, verifier without one", staging, "", nil, false},
		{"tag changed in transit", staging, production, ErrBadSignature, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := newClientRequest(t, "POST", "https://unibus.example/v1/rooms", []byte(`{}`))
			if err := sign(c.signTag).Sign(req, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if c.tampered {
				in := req.Header.Get(headerSignatureInput)
				req.Header.Set(headerSignatureInput, strings.Replace(in, c.signTag, c.wantTag, 1))
			}
			v := testVerifier(t0, nil)
			v.Tag = c.wantTag
			r, body := receive(t, req)
			_, err := v.Verify(r, body)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
	long := newClientRequest(t, "GET", "https://unibus.example/v1/me", nil)
	if err := sign(strings.Repeat("t", MaxTagBytes+1)).Sign(long, nil); err != nil {
		t.Fatal(err)
	}
	lr, _ := receive(t, long)
	if _, err := testVerifier(t0, nil).Verify(lr, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a tag over %d bytes: %v", MaxTagBytes, err)
	}
}

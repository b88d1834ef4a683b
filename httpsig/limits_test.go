package httpsig

import (
	"crypto/ed25519"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestVerifyWindowBoundary checks the clock window at its edges, with the
// default and a configured window.
func TestVerifyWindowBoundary(t *testing.T) {
	tests := []struct {
		window time.Duration
		skew   time.Duration
		ok     bool
	}{
		{0, DefaultWindow, true},
		{0, -DefaultWindow, true},
		{0, DefaultWindow + time.Second, false},
		{0, -DefaultWindow - time.Second, false},
		{0, DefaultWindow + time.Nanosecond, false},
		{5 * time.Minute, 5 * time.Minute, true},
		{5 * time.Minute, -5*time.Minute - time.Second, false},
	}
	for _, tt := range tests {
		req, body := signedRequest(t, http.MethodPost, testURL, testBody)
		v := testVerifier(t0.Add(tt.skew), nil)
		v.Window = tt.window
		_, err := v.Verify(req, body)
		if tt.ok && err != nil {
			t.Errorf("window %s, skew %s: %v", tt.window, tt.skew, err)
		}
		if !tt.ok && !errors.Is(err, ErrExpired) {
			t.Errorf("window %s, skew %s: got %v, want ErrExpired", tt.window, tt.skew, err)
		}
	}
}

// TestVerifyHeaderSizeBoundary checks that MaxSignatureHeaderBytes is the
// largest accepted header, over one or several field lines.
func TestVerifyHeaderSizeBoundary(t *testing.T) {
	for _, field := range []string{"Signature-Input", "Signature"} {
		for _, size := range []int{MaxSignatureHeaderBytes, MaxSignatureHeaderBytes + 1} {
			req, body := signedRequest(t, http.MethodPost, testURL, testBody)
			v := req.Header.Get(field)
			req.Header.Set(field, strings.Repeat(" ", size-len(v))+v)
			_, err := testVerifier(t0, nil).Verify(req, body)
			if size <= MaxSignatureHeaderBytes && err != nil {
				t.Errorf("%s of %d bytes: %v", field, size, err)
			}
			if size > MaxSignatureHeaderBytes && !errors.Is(err, ErrMalformed) {
				t.Errorf("%s of %d bytes: got %v, want ErrMalformed", field, size, err)
			}
		}
	}
	// Several field lines count together, with the ", " that joins them.
	req, body := signedRequest(t, http.MethodPost, testURL, testBody)
	v := req.Header.Get("Signature-Input")
	pad := strings.Repeat("a", MaxSignatureHeaderBytes-len(v)-len(", ")-len("x="))
	req.Header.Add("Signature-Input", "x="+pad)
	if _, err := testVerifier(t0, nil).Verify(req, body); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "exactly one") {
		t.Errorf("at the limit over two lines: got %v, want the label error", err)
	}
	req.Header["Signature-Input"][1] += "a"
	if _, err := testVerifier(t0, nil).Verify(req, body); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "longer") {
		t.Errorf("one byte over two lines: got %v, want the size error", err)
	}
}

// TestVerifyParamLimits checks MaxNonceBytes, MaxKeyIDBytes and MaxComponents
// at the boundary: the limit itself passes parsing, one more is ErrMalformed.
func TestVerifyParamLimits(t *testing.T) {
	std := []string{"@method", "@path", "@query", "content-digest"}
	longKeyID := strings.Repeat("k", MaxKeyIDBytes)
	extra := map[string]ed25519.PublicKey{longKeyID: testKey.Public().(ed25519.PublicKey)}
	withParam := func(key string, value any) []param {
		ps := standardParams()
		for i := range ps {
			if ps[i].key == key {
				ps[i].value = value
			}
		}
		return ps
	}
	components := func(n int) []string {
		c := slices.Clone(std)
		for i := len(c); i < n; i++ {
			c = append(c, "x-h"+strings.Repeat("h", i))
		}
		return c
	}
	tests := []struct {
		name       string
		components []string
		params     []param
		want       error // nil: verifies
	}{
		{"nonce at limit", std, withParam("nonce", strings.Repeat("n", MaxNonceBytes)), nil},
		{"nonce over limit", std, withParam("nonce", strings.Repeat("n", MaxNonceBytes+1)), ErrMalformed},
		{"keyid at limit", std, withParam("keyid", longKeyID), nil},
		{"keyid over limit", std, withParam("keyid", longKeyID+"k"), ErrMalformed},
		{"components at limit", components(MaxComponents), standardParams(), nil},
		{"components over limit", components(MaxComponents + 1), standardParams(), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			for _, c := range tt.components[len(std):] {
				req.Header.Set(c, "v")
			}
			signCustom(t, req, testBody, testKey, Label, tt.components, tt.params)
			server, body := receive(t, req)
			_, err := testVerifier(t0, extra).Verify(server, body)
			if tt.want == nil && err != nil {
				t.Errorf("got %v, want success", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestContentDigestLimit checks MaxContentDigestBytes at the boundary.
func TestContentDigestLimit(t *testing.T) {
	body := []byte("x")
	d := ContentDigest(body)
	for _, size := range []int{MaxContentDigestBytes, MaxContentDigestBytes + 1} {
		v := strings.Repeat(" ", size-len(d)) + d
		err := checkContentDigest([]string{v}, body)
		if size <= MaxContentDigestBytes && err != nil {
			t.Errorf("%d bytes: %v", size, err)
		}
		if size > MaxContentDigestBytes && !errors.Is(err, ErrDigest) {
			t.Errorf("%d bytes: got %v, want ErrDigest", size, err)
		}
	}
}

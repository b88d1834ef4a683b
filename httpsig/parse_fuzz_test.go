package httpsig

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fieldLines splits a fuzzed header value into field lines: each "\n" starts
// another line of the same field, as when a header is sent twice; "" is no
// header at all.
func fieldLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// FuzzContentDigest parses arbitrary Content-Digest field lines. Every
// failure wraps ErrDigest; an accepted sha-256 member is 32 bytes; the
// check against a body passes exactly when that member is the body's
// SHA-256; and what ContentDigest emits parses back to the body's digest.
func FuzzContentDigest(f *testing.F) {
	body := []byte(`{"hello": "world"}`)
	f.Add(ContentDigest(body), body)
	f.Add("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n"+ContentDigest(body), body)
	f.Add("md5=:AAAA:, "+ContentDigest(nil)+";x=1", []byte{})
	f.Add(`sha-256=(:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:)`, body)
	f.Add("", []byte("x"))
	f.Fuzz(func(t *testing.T, field string, body []byte) {
		lines := fieldLines(field)
		want := sha256.Sum256(body)
		got, err := parseContentDigest(lines)
		cerr := checkContentDigest(lines, body)
		if err != nil {
			if !errors.Is(err, ErrDigest) {
				t.Fatalf("parse: undocumented error %v", err)
			}
			if !errors.Is(cerr, ErrDigest) {
				t.Fatalf("check passed a field that does not parse: %v", cerr)
			}
		} else {
			if len(got) != sha256.Size {
				t.Fatalf("accepted a %d-byte sha-256", len(got))
			}
			if fieldLen(lines) > MaxContentDigestBytes {
				t.Fatal("accepted a field over the length limit")
			}
			if match := bytes.Equal(got, want[:]); match != (cerr == nil) {
				t.Fatalf("digest match %v, but check returned %v", match, cerr)
			}
			if cerr != nil && !errors.Is(cerr, ErrDigest) {
				t.Fatalf("check: undocumented error %v", cerr)
			}
		}
		if own, err := parseContentDigest([]string{ContentDigest(body)}); err != nil || !bytes.Equal(own, want[:]) {
			t.Fatalf("ContentDigest does not parse back: %v", err)
		}
	})
}

// FuzzSignatureInput parses arbitrary Signature-Input field lines. Every
// failure wraps ErrMalformed (ErrMissingSignature without lines); what is
// accepted keeps within the limits, covers each component once, and its
// serialized parameters — the last line of the signature base — hold no
// line break and parse back to the same input (the serialization is
// canonical).
func FuzzSignatureInput(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.sigInput)
	}
	f.Add(`sig1=("@method" "@path");created=1;created=2;nonce="a";keyid="b"`)
	f.Add("sig1=();created=1\nsig1=(\"@path\")")
	f.Add(`sig1=("@method");nonce="` + strings.Repeat("n", MaxNonceBytes+1) + `"`)
	f.Fuzz(func(t *testing.T, field string) {
		lines := fieldLines(field)
		in, err := parseSignatureInput(lines, Label)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !(len(lines) == 0 && errors.Is(err, ErrMissingSignature)) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if len(in.components) > MaxComponents || len(in.nonce) > MaxNonceBytes || len(in.keyID) > MaxKeyIDBytes {
			t.Fatalf("accepted beyond the limits: %d components, nonce %d, keyid %d bytes", len(in.components), len(in.nonce), len(in.keyID))
		}
		for i, c := range in.components {
			if slices.Contains(in.components[:i], c) {
				t.Fatalf("component %q covered twice", c)
			}
		}
		if breaksBase(in.params) {
			t.Fatalf("the serialized parameters break the signature base: %q", in.params)
		}
		again, err := parseSignatureInput([]string{Label + "=" + in.params}, Label)
		if err != nil {
			t.Fatalf("the serialized input %q does not parse: %v", in.params, err)
		}
		if !reflect.DeepEqual(again, in) {
			t.Fatalf("the serialized input parses to another input:\n%+v\n%+v", again, in)
		}
	})
}

// FuzzSignature parses arbitrary Signature field lines: every failure
// wraps ErrMalformed (ErrMissingSignature without lines), and an accepted
// signature re-serialized as a byte sequence parses back to the same bytes.
func FuzzSignature(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.sig)
	}
	f.Add("sig1=:AAAA:;alg=\"x\"")
	f.Add("sig1=:AAAA:, sig2=:AAAA:")
	f.Add("sig1=\"AAAA\"")
	f.Fuzz(func(t *testing.T, field string) {
		lines := fieldLines(field)
		sig, err := parseSignature(lines, Label)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !(len(lines) == 0 && errors.Is(err, ErrMissingSignature)) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if fieldLen(lines) > MaxSignatureHeaderBytes {
			t.Fatal("accepted a field over the length limit")
		}
		again, err := parseSignature([]string{Label + "=:" + base64.StdEncoding.EncodeToString(sig) + ":"}, Label)
		if err != nil || !bytes.Equal(again, sig) {
			t.Fatalf("the signature does not round-trip: %v", err)
		}
	})
}

// FuzzSignatureBase builds signature bases from arbitrary requests (method,
// target, host, one header), covered components and parameters. It fails
// only with ErrMalformed, and what it builds has exactly one line per
// covered component, each naming it, then the @signature-params line, and
// no CR or NUL: no request can inject a line into what is signed.
func FuzzSignatureBase(f *testing.F) {
	f.Add("POST", "/v1/rooms?x=1", "example.com", "Content-Digest", ContentDigest([]byte("{}")),
		"@method @path @query content-digest", `("@method" "@path" "@query" "content-digest");created=1;keyid="k"`)
	f.Add("GET", "/a%0Ab?c", "Example.COM:80", "X-Evil", "a\r\n\"@path\": /admin",
		"@authority @target-uri @request-target @scheme x-evil host", `();created=1`)
	f.Add("", "/", "", "Host", "h", "@signature-params", "")
	f.Add("GET", "/", "h", "A", "v", "@method @method", "")
	f.Fuzz(func(t *testing.T, method, target, host, name, value, components, params string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: method, URL: u, Host: host, RequestURI: target,
			Header: http.Header{textproto.CanonicalMIMEHeaderKey(name): {value}}}
		comps := strings.Split(components, " ")
		base, err := SignatureBase(req, comps, params)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if bytes.ContainsAny(base, "\r\x00") {
			t.Fatalf("the base holds CR or NUL: %q", base)
		}
		lines := strings.Split(string(base), "\n")
		if len(lines) != len(comps)+1 {
			t.Fatalf("%d components made %d lines: %q", len(comps), len(lines), base)
		}
		for i, c := range comps {
			if !strings.HasPrefix(lines[i], `"`+c+`": `) {
				t.Fatalf("line %d does not name component %q: %q", i, c, lines[i])
			}
		}
		if last := lines[len(comps)]; last != `"@signature-params": `+params {
			t.Fatalf("the last line is not the parameters: %q", last)
		}
	})
}

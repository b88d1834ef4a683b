package httpsig

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// fuzzSeed is one input of FuzzVerify: the Signature-Input, Signature and
// Content-Digest header values ("" = header absent) and the body.
type fuzzSeed struct {
	name                         string
	sigInput, sig, contentDigest string
	body                         []byte
}

// fuzzRequest is the fixed request FuzzVerify verifies, as the server sees it.
func fuzzRequest(s fuzzSeed) *http.Request {
	req := httptest.NewRequest(http.MethodPost, testURL, nil)
	for k, v := range map[string]string{
		"Signature-Input": s.sigInput,
		"Signature":       s.sig,
		"Content-Digest":  s.contentDigest,
	} {
		if v != "" {
			req.Header[k] = []string{v}
		}
	}
	return req
}

// fuzzSeeds are the seed corpus, written to testdata/fuzz/FuzzVerify by
// TestFuzzSeeds -update. The first is a valid signed request.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	g := makeSignGolden(t)
	valid := fuzzSeed{"valid", g.SignatureInput, g.Signature, g.ContentDigest, []byte(g.Body)}
	seed := func(name, in string) fuzzSeed {
		return fuzzSeed{name, in, g.Signature, g.ContentDigest, []byte(g.Body)}
	}
	return []fuzzSeed{
		valid,
		{"unsigned", "", "", "", nil},
		{"no-body", `sig1=("@method" "@path" "@query");created=1767225600;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="` + testKeyID + `";alg="ed25519"`, "sig1=:" + string(bytes.Repeat([]byte("A"), 86)) + "==:", "", nil},
		seed("alg-rsa", `sig1=("@method" "@path" "@query" "content-digest");created=1767225600;nonce="x";keyid="k";alg="rsa-pss-sha512"`),
		seed("duplicate-component", `sig1=("@method" "@path" "@query" "content-digest" "@path");created=1767225600;nonce="x";keyid="k"`),
		seed("component-params", `sig1=("@method";req "@path";sf "@query";key="a" "content-digest";bs);created=1767225600;nonce="x";keyid="k"`),
		seed("two-signatures", g.SignatureInput+`, sig2=("@method");created=1`),
		seed("other-fields", `sig1=("@method" "@authority" "@scheme" "@target-uri" "@request-target" "@path" "@query" "content-digest" "content-type" "host");created=1767225600;expires=1767225660;nonce="x";keyid="`+testKeyID+`";tag="t"`),
	}
}

// writeFuzzSeed renders s in the go fuzz corpus format.
func writeFuzzSeed(s fuzzSeed) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\nstring(%s)\nstring(%s)\nstring(%s)\n[]byte(%s)\n",
		strconv.Quote(s.sigInput), strconv.Quote(s.sig), strconv.Quote(s.contentDigest), strconv.Quote(string(s.body)))
}

// TestFuzzSeeds regenerates the committed seed corpus and compares it.
func TestFuzzSeeds(t *testing.T) {
	for _, s := range fuzzSeeds(t) {
		name := filepath.Join("testdata", "fuzz", "FuzzVerify", "seed-"+s.name)
		got := writeFuzzSeed(s)
		if *update {
			if err := os.WriteFile(name, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale; run go test -run TestFuzzSeeds -update", name)
		}
	}
	// The valid seed must verify, or the fuzzer starts from nothing.
	s := fuzzSeeds(t)[0]
	if _, err := testVerifier(t0, nil).Verify(fuzzRequest(s), s.body); err != nil {
		t.Errorf("the valid seed does not verify: %v", err)
	}
}

// sentinels are the errors Verify may return; every error must wrap one.
var sentinels = []error{
	ErrMissingSignature, ErrMalformed, ErrUnsupportedAlg, ErrMissingComponent,
	ErrMissingParam, ErrExpired, ErrUnknownKey, ErrBadSignature, ErrDigest,
}

// FuzzVerify feeds arbitrary Signature-Input, Signature and Content-Digest
// values and bodies to Verify on a fixed request, with a resolver that knows
// one key. Verify must not panic, must return one of its sentinel errors,
// must decide as it does without a KeyCache, and may succeed only for
// exactly what that key signed: the valid seed's body, nonce, created and
// components.
func FuzzVerify(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s.sigInput, s.sig, s.contentDigest, s.body)
	}
	valid := seeds[0]
	want, err := testVerifier(t0, nil).Verify(fuzzRequest(valid), valid.body)
	if err != nil {
		f.Fatal(err)
	}
	// As membershipd verifies: with prepared keys; and the verdict must be
	// the one crypto/ed25519 gives without them.
	v := testVerifier(t0, nil)
	v.Keys = NewKeyCache(4)
	plain := testVerifier(t0, nil)

	f.Fuzz(func(t *testing.T, sigInput, sig, contentDigest string, body []byte) {
		seed := fuzzSeed{"", sigInput, sig, contentDigest, body}
		got, err := v.Verify(fuzzRequest(seed), body)
		if _, perr := plain.Verify(fuzzRequest(seed), body); (perr == nil) != (err == nil) {
			t.Fatalf("with prepared keys: %v; with crypto/ed25519: %v", err, perr)
		}
		if err != nil {
			if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if got.KeyID != "" || got.Nonce != "" || got.Components != nil || !got.Created.IsZero() {
				t.Fatalf("a denial returned %+v", got)
			}
			return
		}
		if !bytes.Equal(body, valid.body) || got.KeyID != want.KeyID || got.Nonce != want.Nonce ||
			!got.Created.Equal(want.Created) || !slices.Equal(got.Components, want.Components) {
			t.Fatalf("accepted something the key never signed: %+v, body %q", got, body)
		}
	})
}

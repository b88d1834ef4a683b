package httpsig

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

const testURL = "https://api.unibus.test/v1/rooms/r1/members?limit=10&after=u%2F7"

var testBody = []byte(`{"user":"4f2a","sealed_key":"AAAA"}`)

func TestSignVerifyRoundTrip(t *testing.T) {
	tests := []struct {
		name, method, url string
		body              []byte
		components        []string
	}{
		{"with body", http.MethodPost, testURL, testBody, []string{"@method", "@path", "@query", "content-digest"}},
		{"no body", http.MethodGet, "https://api.unibus.test/v1/me", nil, []string{"@method", "@path", "@query"}},
		{"empty body", http.MethodDelete, "https://api.unibus.test/v1/rooms/r1", []byte{}, []string{"@method", "@path", "@query"}},
		{"root path", http.MethodGet, "https://api.unibus.test", nil, []string{"@method", "@path", "@query"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, body := signedRequest(t, tt.method, tt.url, tt.body)
			if len(tt.body) == 0 && req.Header.Get("Content-Digest") != "" {
				t.Error("Sign added Content-Digest for an empty body")
			}
			got, err := testVerifier(t0, nil).Verify(req, body)
			if err != nil {
				t.Fatal(err)
			}
			if got.KeyID != testKeyID || !got.Created.Equal(t0) || !slices.Equal(got.Components, tt.components) {
				t.Errorf("got %+v", got)
			}
			if n, err := base64.RawURLEncoding.DecodeString(got.Nonce); err != nil || len(n) != 16 || len(got.Nonce) != 22 {
				t.Errorf("nonce %q: want 22 characters of base64url of 16 bytes (%v)", got.Nonce, err)
			}
		})
	}
}

// TestSignVerifyHTTP signs with a real client and verifies in a real server.
func TestSignVerifyHTTP(t *testing.T) {
	v := testVerifier(time.Now(), nil)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got, err := v.Verify(r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, got.KeyID)
	}))
	t.Cleanup(srv.Close)

	signer := &Signer{KeyID: testKeyID, Key: testKey}
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/v1/me/kem-key?x=%20y", bytes.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Sign(req, testBody); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(got) != testKeyID {
		t.Errorf("status %d: %s", resp.StatusCode, got)
	}
}

// TestVerifyDenials runs every way a request must be denied, each with the
// error a caller branches on.
func TestVerifyDenials(t *testing.T) {
	std := []string{"@method", "@path", "@query", "content-digest"}
	custom := func(label string, components []string, params []param) func(t *testing.T) (*http.Request, []byte) {
		return func(t *testing.T) (*http.Request, []byte) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			signCustom(t, req, testBody, testKey, label, components, params)
			return receive(t, req)
		}
	}
	without := func(key string) []param {
		return slices.DeleteFunc(standardParams(), func(p param) bool { return p.key == key })
	}
	with := func(key string, value any) []param {
		ps := standardParams()
		for i := range ps {
			if ps[i].key == key {
				ps[i].value = value
				return ps
			}
		}
		return append(ps, param{key, value})
	}
	// signed returns the standard signed request after mutate changed it.
	signed := func(mutate func(req *http.Request, body []byte) []byte) func(t *testing.T) (*http.Request, []byte) {
		return func(t *testing.T) (*http.Request, []byte) {
			req, body := signedRequest(t, http.MethodPost, testURL, testBody)
			return req, mutate(req, body)
		}
	}
	setHeader := func(name, value string) func(t *testing.T) (*http.Request, []byte) {
		return signed(func(req *http.Request, body []byte) []byte {
			req.Header.Set(name, value)
			return body
		})
	}
	sigField := func(sig []byte) string { return "sig1=:" + base64.StdEncoding.EncodeToString(sig) + ":" }

	tests := []struct {
		name string
		make func(t *testing.T) (*http.Request, []byte)
		now  time.Time // verifier clock; zero means t0
		want error
	}{
		{name: "no headers", want: ErrMissingSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Del("Signature")
			req.Header.Del("Signature-Input")
			return body
		})},
		{name: "no Signature", want: ErrMissingSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Del("Signature")
			return body
		})},
		{name: "no Signature-Input", want: ErrMissingSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Del("Signature-Input")
			return body
		})},
		{name: "bad signature bytes", want: ErrBadSignature, make: signed(func(req *http.Request, body []byte) []byte {
			sig, err := parseSignature(req.Header.Values("Signature"), Label)
			if err != nil {
				panic(err)
			}
			sig[10] ^= 0x01
			req.Header.Set("Signature", sigField(sig))
			return body
		})},
		{name: "signature too short", want: ErrBadSignature, make: setHeader("Signature", sigField(make([]byte, 63)))},
		{name: "signature empty", want: ErrBadSignature, make: setHeader("Signature", "sig1=::")},
		{name: "signature by another key", want: ErrBadSignature, make: func(t *testing.T) (*http.Request, []byte) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			signCustom(t, req, testBody, otherKey, Label, std, standardParams())
			return receive(t, req)
		}},
		{name: "keyid unknown", want: errNoSuchKey, make: func(t *testing.T) (*http.Request, []byte) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			s := &Signer{KeyID: strings.Repeat("ab", 32), Key: otherKey, Now: at(t0)}
			if err := s.Sign(req, testBody); err != nil {
				t.Fatal(err)
			}
			return receive(t, req)
		}},
		{name: "key not ed25519", want: ErrUnknownKey, make: custom(Label, std, with("keyid", "short-key"))},
		{name: "created 61s in the past", now: t0.Add(61 * time.Second), want: ErrExpired, make: signed(keep)},
		{name: "created 61s in the future", now: t0.Add(-61 * time.Second), want: ErrExpired, make: signed(keep)},
		{name: "created far in the future", want: ErrExpired, make: custom(Label, std, with("created", int64(999_999_999_999_999)))},
		{name: "created negative", want: ErrExpired, make: custom(Label, std, with("created", int64(-999_999_999_999_999)))},
		{name: "expires passed", want: ErrExpired, make: custom(Label, std, with("expires", t0.Unix()-1))},
		{name: "missing nonce", want: ErrMissingParam, make: custom(Label, std, without("nonce"))},
		{name: "empty nonce", want: ErrMissingParam, make: custom(Label, std, with("nonce", ""))},
		{name: "missing created", want: ErrMissingParam, make: custom(Label, std, without("created"))},
		{name: "missing keyid", want: ErrMissingParam, make: custom(Label, std, without("keyid"))},
		{name: "empty keyid", want: ErrMissingParam, make: custom(Label, std, with("keyid", ""))},
		{name: "nonce too long", want: ErrMalformed, make: custom(Label, std, with("nonce", strings.Repeat("n", MaxNonceBytes+1)))},
		{name: "keyid too long", want: ErrMalformed, make: custom(Label, std, with("keyid", strings.Repeat("k", MaxKeyIDBytes+1)))},
		{name: "created not an integer", want: ErrMalformed, make: custom(Label, std, with("created", "1767225600"))},
		{name: "nonce not a string", want: ErrMalformed, make: custom(Label, std, with("nonce", int64(7)))},
		{name: "unknown parameter", want: ErrMalformed, make: custom(Label, std, with("context", "x"))},
		{name: "body changed after signing", want: ErrDigest, make: signed(func(_ *http.Request, body []byte) []byte {
			return append(slices.Clone(body), ' ')
		})},
		{name: "body and Content-Digest changed after signing", want: ErrBadSignature, make: signed(func(req *http.Request, _ []byte) []byte {
			body := []byte(`{"user":"evil"}`)
			req.Header.Set("Content-Digest", ContentDigest(body))
			return body
		})},
		{name: "body added to a bodyless request", want: ErrMissingComponent, make: func(t *testing.T) (*http.Request, []byte) {
			req, _ := signedRequest(t, http.MethodPost, testURL, nil)
			return req, testBody
		}},
		{name: "Content-Digest removed", want: ErrDigest, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Del("Content-Digest")
			return body
		})},
		{name: "Content-Digest without sha-256", want: ErrDigest, make: setHeader("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")},
		{name: "content-digest not covered", want: ErrMissingComponent, make: custom(Label, []string{"@method", "@path", "@query"}, standardParams())},
		{name: "@query not covered", want: ErrMissingComponent, make: custom(Label, []string{"@method", "@path", "content-digest"}, standardParams())},
		{name: "@method not covered", want: ErrMissingComponent, make: custom(Label, []string{"@path", "@query", "content-digest"}, standardParams())},
		{name: "@path not covered", want: ErrMissingComponent, make: custom(Label, []string{"@method", "@query", "content-digest"}, standardParams())},
		{name: "path changed", want: ErrBadSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.URL.Path = "/v1/rooms/r2/members"
			return body
		})},
		{name: "method changed", want: ErrBadSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.Method = http.MethodPut
			return body
		})},
		{name: "query changed", want: ErrBadSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.URL.RawQuery = "limit=1000&after=u%2F7"
			return body
		})},
		{name: "query removed", want: ErrBadSignature, make: signed(func(req *http.Request, body []byte) []byte {
			req.URL.RawQuery = ""
			return body
		})},
		{name: "alg rsa-pss-sha512", want: ErrUnsupportedAlg, make: custom(Label, std, with("alg", "rsa-pss-sha512"))},
		{name: "alg not a string", want: ErrMalformed, make: custom(Label, std, with("alg", true))},
		{name: "two signatures", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Add("Signature-Input", strings.Replace(req.Header.Get("Signature-Input"), "sig1=", "sig2=", 1))
			req.Header.Add("Signature", strings.Replace(req.Header.Get("Signature"), "sig1=", "sig2=", 1))
			return body
		})},
		{name: "label other than sig1", want: ErrMalformed, make: custom("sig2", std, standardParams())},
		{name: "labels differ", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Set("Signature", strings.Replace(req.Header.Get("Signature"), "sig1=", "sig2=", 1))
			return body
		})},
		{name: "oversized Signature-Input", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			v := req.Header.Get("Signature-Input")
			req.Header.Set("Signature-Input", strings.Repeat(" ", MaxSignatureHeaderBytes+1-len(v))+v)
			return body
		})},
		{name: "oversized Signature", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			v := req.Header.Get("Signature")
			req.Header.Set("Signature", strings.Repeat(" ", MaxSignatureHeaderBytes+1-len(v))+v)
			return body
		})},
		{name: "duplicate component", want: ErrMalformed, make: custom(Label, []string{"@method", "@path", "@query", "content-digest", "@path"}, standardParams())},
		{name: "too many components", want: ErrMalformed, make: func(t *testing.T) (*http.Request, []byte) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			components := slices.Clone(std)
			for i := len(components); i <= MaxComponents; i++ {
				name := "x-h" + strings.Repeat("h", i)
				req.Header.Set(name, "v")
				components = append(components, name)
			}
			signCustom(t, req, testBody, testKey, Label, components, standardParams())
			return receive(t, req)
		}},
		{name: "component parameter", want: ErrMalformed, make: setHeader("Signature-Input", `sig1=("@method" "@path" "@query" "content-digest";sf);created=1767225600;nonce="n";keyid="`+testKeyID+`"`)},
		{name: "component not a string", want: ErrMalformed, make: setHeader("Signature-Input", `sig1=(@method "@path");created=1767225600;nonce="n";keyid="k"`)},
		{name: "unsupported derived component", want: ErrMalformed, make: custom(Label, append(slices.Clone(std), "@status"), standardParams())},
		{name: "covered field absent", want: ErrMalformed, make: func(t *testing.T) (*http.Request, []byte) {
			req := newClientRequest(t, http.MethodPost, testURL, testBody)
			req.Header.Set("Content-Type", "application/json")
			signCustom(t, req, testBody, testKey, Label, append(slices.Clone(std), "content-type"), standardParams())
			server, body := receive(t, req)
			server.Header.Del("Content-Type")
			return server, body
		}},
		{name: "Signature-Input unparseable", want: ErrMalformed, make: setHeader("Signature-Input", `sig1=("@method" "@path"`)},
		{name: "Signature-Input is an item", want: ErrMalformed, make: setHeader("Signature-Input", `sig1="@method"`)},
		{name: "Signature unparseable", want: ErrMalformed, make: setHeader("Signature", `sig1=:not base64!:`)},
		{name: "Signature is a string", want: ErrMalformed, make: setHeader("Signature", `sig1="AAAA"`)},
		{name: "Signature has parameters", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Set("Signature", req.Header.Get("Signature")+";x=1")
			return body
		})},
		{name: "empty headers", want: ErrMalformed, make: signed(func(req *http.Request, body []byte) []byte {
			req.Header.Set("Signature-Input", "")
			req.Header.Set("Signature", "")
			return body
		})},
	}
	// Every denial holds with prepared keys too (one cache for every case,
	// so most verifications there use a key prepared by an earlier one).
	keys := NewKeyCache(16)
	for _, tt := range tests {
		for _, cache := range []*KeyCache{nil, keys} {
			name := tt.name
			if cache != nil {
				name += "/key-cache"
			}
			t.Run(name, func(t *testing.T) {
				req, body := tt.make(t)
				now := tt.now
				if now.IsZero() {
					now = t0
				}
				v := testVerifier(now, nil)
				v.Keys = cache
				got, err := v.Verify(req, body)
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				if tt.want == errNoSuchKey && !errors.Is(err, ErrUnknownKey) {
					t.Errorf("a resolver error must be wrapped in ErrUnknownKey, got %v", err)
				}
				if got.KeyID != "" || got.Nonce != "" || got.Components != nil {
					t.Errorf("a denial returned %+v", got)
				}
				if sig := req.Header.Get("Signature"); len(sig) > 20 && strings.Contains(err.Error(), sig[6:len(sig)-1]) {
					t.Errorf("error echoes the signature: %v", err)
				}
			})
		}
	}
}

func keep(_ *http.Request, body []byte) []byte { return body }

// TestVerifyResolveContext checks that Resolve sees the request's context
// and is not called for a request that fails a cheaper check.
func TestVerifyResolveContext(t *testing.T) {
	type ctxKey struct{}
	calls := 0
	v := &Verifier{
		Now: at(t0),
		Resolve: func(ctx context.Context, keyID string) (ed25519.PublicKey, error) {
			calls++
			if ctx.Value(ctxKey{}) != "marker" {
				t.Error("Resolve did not get the request's context")
			}
			return testKey.Public().(ed25519.PublicKey), nil
		},
	}
	req, body := signedRequest(t, http.MethodPost, testURL, testBody)
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, "marker"))
	if _, err := v.Verify(req, body); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(req, append(slices.Clone(body), 'x')); !errors.Is(err, ErrDigest) {
		t.Fatalf("got %v, want ErrDigest", err)
	}
	if calls != 1 {
		t.Errorf("Resolve called %d times, want 1", calls)
	}
	v.Resolve = nil
	if _, err := v.Verify(req, body); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("no resolver: got %v, want ErrUnknownKey", err)
	}
}

func TestStreamingSignAndVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	body := []byte("a streamed body, hashed as it goes")
	sum := sha256.Sum256(body)
	v := &Verifier{Resolve: func(context.Context, string) (ed25519.PublicKey, error) { return pub, nil }}
	req := httptest.NewRequest("PUT", "https://example.com/v1/rooms/r/blobs/x", nil)
	s := &Signer{KeyID: "k", Key: priv}
	if err := s.SignDigest(req, sum[:]); err != nil {
		t.Fatal(err)
	}
	_, got, err := v.VerifyStreaming(req)
	if err != nil || !bytes.Equal(got, sum[:]) {
		t.Fatalf("streaming verify: %v", err)
	}
	// The same request verified as in-memory with the body also passes:
	// both forms are one wire format.
	if _, err := v.Verify(req, body); err != nil {
		t.Fatal(err)
	}
	// A streamed request must cover content-digest.
	plain := httptest.NewRequest("PUT", "https://example.com/x", nil)
	if err := s.Sign(plain, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.VerifyStreaming(plain); !errors.Is(err, ErrMissingComponent) {
		t.Fatalf("streaming without digest: %v", err)
	}
	if err := s.SignDigest(req, []byte("short")); err == nil {
		t.Fatal("short digest accepted")
	}
}

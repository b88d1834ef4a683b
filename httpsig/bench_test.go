package httpsig

import (
	"bytes"
	"crypto/ed25519"
	"net/http"
	"testing"
)

// benchBody is a typical control-plane body (a sealed room key is ~1 KiB).
var benchBody = bytes.Repeat([]byte("a"), 1024)

// BenchmarkSign signs a request with a 1 KiB body. "raw-ed25519" is the bare
// signature over a base of the same size, for the ratio.
func BenchmarkSign(b *testing.B) {
	req := newClientRequest(b, http.MethodPost, testURL, benchBody)
	s := testSigner()
	b.Run("httpsig", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Sign(req, benchBody); err != nil {
				b.Fatal(err)
			}
		}
	})
	base := benchBase(b, req)
	b.Run("raw-ed25519", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ed25519.Sign(testKey, base)
		}
	})
}

// BenchmarkVerify verifies a signed request with a 1 KiB body, against the
// bare ed25519 verification it contains.
func BenchmarkVerify(b *testing.B) {
	req, body := signedRequest(b, http.MethodPost, testURL, benchBody)
	v := testVerifier(t0, nil)
	b.Run("httpsig", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(req, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	prepared := testVerifier(t0, nil)
	prepared.Keys = NewKeyCache(16)
	b.Run("httpsig-key-cache", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := prepared.Verify(req, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	base := benchBase(b, req)
	sig := ed25519.Sign(testKey, base)
	pub := testKey.Public().(ed25519.PublicKey)
	b.Run("raw-ed25519", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub, base, sig) {
				b.Fatal("bad signature")
			}
		}
	})
}

func benchBase(b *testing.B, req *http.Request) []byte {
	b.Helper()
	in, err := parseSignatureInput(req.Header.Values("Signature-Input"), Label)
	if err != nil {
		b.Fatal(err)
	}
	base, err := SignatureBase(req, in.components, in.params)
	if err != nil {
		b.Fatal(err)
	}
	return base
}

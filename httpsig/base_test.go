package httpsig

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"
)

// rfcVector is one signature example from RFC 9421 Appendix B, as stored in
// testdata/rfc9421_*.json.
type rfcVector struct {
	Description     string   `json:"description"`
	Request         string   `json:"request"`
	PublicKeyPEM    string   `json:"public_key_pem"`
	PrivateKeyPEM   string   `json:"private_key_pem"`
	Label           string   `json:"label"`
	Components      []string `json:"components"`
	SignatureParams string   `json:"signature_params"`
	SignatureInput  string   `json:"signature_input"`
	SignatureBase   string   `json:"signature_base"`
	Signature       string   `json:"signature"`
}

func loadVector(t *testing.T, name string) rfcVector {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var v rfcVector
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func parsePEMKeys(t *testing.T, v rfcVector) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	block, _ := pem.Decode([]byte(v.PublicKeyPEM))
	if block == nil {
		t.Fatal("public_key_pem: no PEM block")
	}
	pubAny, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode([]byte(v.PrivateKeyPEM))
	if block == nil {
		t.Fatal("private_key_pem: no PEM block")
	}
	privAny, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := pubAny.(ed25519.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, not ed25519", pubAny)
	}
	priv, ok := privAny.(ed25519.PrivateKey)
	if !ok {
		t.Fatalf("private key is %T, not ed25519", privAny)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("the vector's public key is not the public half of its private key")
	}
	return pub, priv
}

// TestRFC9421B26 checks SignatureBase and our structured-field handling against
// RFC 9421 Appendix B.2.6 (ed25519), byte for byte.
func TestRFC9421B26(t *testing.T) {
	v := loadVector(t, "testdata/rfc9421_b26.json")
	pub, priv := parsePEMKeys(t, v)

	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(v.Request)))
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(req.Body); err != nil {
		t.Fatal(err)
	}
	// The test-request's own Content-Digest is sha-512 (RFC 9530 §B); check
	// the vector's request is intact, and that we ignore that member.
	sum := sha512.Sum512(body.Bytes())
	if want := "sha-512=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"; req.Header.Get("Content-Digest") != want {
		t.Fatalf("test-request Content-Digest is %q, want %q", req.Header.Get("Content-Digest"), want)
	}
	if err := checkContentDigest(req.Header.Values("Content-Digest"), body.Bytes()); !errors.Is(err, ErrDigest) {
		t.Errorf("a Content-Digest with only sha-512: got %v, want ErrDigest", err)
	}

	// Signature-Input: parse it as the verifier does.
	in, err := parseSignatureInput([]string{v.SignatureInput}, v.Label)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.components, v.Components) {
		t.Errorf("components: got %q, want %q", in.components, v.Components)
	}
	if in.params != v.SignatureParams {
		t.Errorf("re-serialized @signature-params:\ngot  %s\nwant %s", in.params, v.SignatureParams)
	}
	if in.created != 1618884473 || in.keyID != "test-key-ed25519" || in.hasAlg || in.nonce != "" {
		t.Errorf("parameters: got %+v", in)
	}

	base, err := SignatureBase(req, v.Components, v.SignatureParams)
	if err != nil {
		t.Fatal(err)
	}
	if string(base) != v.SignatureBase {
		t.Fatalf("signature base:\ngot:\n%s\nwant:\n%s", base, v.SignatureBase)
	}

	want, err := parseSignature([]string{v.Signature}, v.Label)
	if err != nil {
		t.Fatal(err)
	}
	if got := ed25519.Sign(priv, base); !bytes.Equal(got, want) {
		t.Errorf("ed25519 over the base:\ngot  %x\nwant %x", got, want)
	}
	if !ed25519.Verify(pub, base, want) {
		t.Error("the RFC signature does not verify over our base")
	}

	// Serializing the signature as the Signer does gives the RFC's field.
	d := httpsfv.NewDictionary()
	d.Add(v.Label, httpsfv.NewItem(want))
	if got, err := httpsfv.Marshal(d); err != nil || got != v.Signature {
		t.Errorf("Signature field: got %q, %v; want %q", got, err, v.Signature)
	}
}

func readRequest(t *testing.T, raw string) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestSignatureBaseComponents checks each derived component and field
// combination against the rules of RFC 9421 §2.1 and §2.2.
func TestSignatureBaseComponents(t *testing.T) {
	const get = "GET /path?param=value&foo=bar&baz=batman HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
	tests := []struct {
		name, raw string
		tls       bool
		component string
		want      string
	}{
		{"method", "POST /path?param=value HTTP/1.1\r\nHost: www.example.com\r\n\r\n", false, "@method", "POST"},
		{"target-uri https", "POST /path?param=value HTTP/1.1\r\nHost: www.example.com\r\n\r\n", true, "@target-uri", "https://www.example.com/path?param=value"},
		{"target-uri no query", "GET /a/b HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "@target-uri", "http://h.test/a/b"},
		{"authority", get, false, "@authority", "www.example.com"},
		{"authority lowercase", "GET / HTTP/1.1\r\nHost: WWW.Example.COM:8470\r\n\r\n", false, "@authority", "www.example.com:8470"},
		{"authority default port", "GET / HTTP/1.1\r\nHost: h.test:443\r\n\r\n", true, "@authority", "h.test"},
		{"authority other port", "GET / HTTP/1.1\r\nHost: h.test:80\r\n\r\n", true, "@authority", "h.test:80"},
		{"scheme http", get, false, "@scheme", "http"},
		{"scheme https", get, true, "@scheme", "https"},
		{"request-target", "POST /path?param=value HTTP/1.1\r\nHost: www.example.com\r\n\r\n", false, "@request-target", "/path?param=value"},
		{"path", get, false, "@path", "/path"},
		{"path escaped as sent", "GET /a%2Fb/c%41 HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "@path", "/a%2Fb/c%41"},
		{"query", get, false, "@query", "?param=value&foo=bar&baz=batman"},
		{"query not a form", "GET /path?queryString HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "@query", "?queryString"},
		{"query empty", "GET /path HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "@query", "?"},
		{"query raw as sent", "GET /p?a=%20b&c=d+e HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "@query", "?a=%20b&c=d+e"},
		{"field", "GET / HTTP/1.1\r\nHost: h.test\r\nContent-Type: application/json\r\n\r\n", false, "content-type", "application/json"},
		{"field lines combined", "GET / HTTP/1.1\r\nHost: h.test\r\nCache-Control: max-age=60\r\nCache-Control:    must-revalidate\r\n\r\n", false, "cache-control", "max-age=60, must-revalidate"},
		{"field trimmed", "GET / HTTP/1.1\r\nHost: h.test\r\nX-Ows-Header:   Leading and trailing whitespace.   \r\n\r\n", false, "x-ows-header", "Leading and trailing whitespace."},
		{"field empty", "GET / HTTP/1.1\r\nHost: h.test\r\nX-Empty-Header:\r\n\r\n", false, "x-empty-header", ""},
		{"field host", "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n", false, "host", "h.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := readRequest(t, tt.raw)
			if tt.tls {
				req.TLS = &tls.ConnectionState{}
			}
			base, err := SignatureBase(req, []string{tt.component}, `("`+tt.component+`")`)
			if err != nil {
				t.Fatal(err)
			}
			want := `"` + tt.component + `": ` + tt.want + "\n" + `"@signature-params": ("` + tt.component + `")`
			if string(base) != want {
				t.Errorf("got\n%s\nwant\n%s", base, want)
			}
		})
	}
}

// TestSignatureBaseClientServer checks that a request built to be sent and the
// same request as a server reads it give the same base.
func TestSignatureBaseClientServer(t *testing.T) {
	components := []string{"@method", "@authority", "@scheme", "@target-uri", "@request-target", "@path", "@query", "content-type"}
	for _, target := range []string{
		"https://API.unibus.test/v1/rooms?limit=10&after=a%2Fb",
		"https://api.unibus.test",
		"https://api.unibus.test:8470/v1/blobs/x%20y?",
	} {
		client, err := http.NewRequest(http.MethodPost, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		client.Header.Set("Content-Type", "application/json")
		server := overWire(t, client, true)
		cb, err := SignatureBase(client, components, "()")
		if err != nil {
			t.Fatal(err)
		}
		sb, err := SignatureBase(server, components, "()")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cb, sb) {
			t.Errorf("%s: client base\n%s\nserver base\n%s", target, cb, sb)
		}
	}
}

func TestSignatureBaseErrors(t *testing.T) {
	req := readRequest(t, "GET /p HTTP/1.1\r\nHost: h.test\r\nDate: x\r\n\r\n")
	req.Header.Set("X-Injected", "a\nb")
	tests := []struct {
		name       string
		components []string
		params     string
	}{
		{"unknown derived", []string{"@status"}, "()"},
		{"query-param unsupported", []string{"@query-param"}, "()"},
		{"signature-params covered", []string{"@signature-params"}, "()"},
		{"uppercase field", []string{"Date"}, "()"},
		{"not a token", []string{"da te"}, "()"},
		{"empty name", []string{""}, "()"},
		{"absent field", []string{"x-missing"}, "()"},
		{"duplicate", []string{"@path", "date", "@path"}, "()"},
		{"line break in value", []string{"x-injected"}, "()"},
		{"line break in params", []string{"@path"}, "()\n\"@path\": /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SignatureBase(req, tt.components, tt.params); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
}

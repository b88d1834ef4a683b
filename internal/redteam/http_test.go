package redteam

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// header is one header line, in order (curl sends duplicates as given).
type header [2]string

// captured is a request the capture proxy saw.
type captured struct {
	method, uri string
	header      http.Header
	body        []byte
}

// captureProxy is a TLS reverse proxy in front of membershipd (with a
// certificate from the same CA) that records what a client sends.
type captureProxy struct {
	url  string
	mu   sync.Mutex
	reqs []captured
}

func (e *env) startCaptureProxy() *captureProxy {
	p := &captureProxy{}
	up := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool}}, Timeout: 30 * time.Second}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.reqs = append(p.reqs, captured{method: r.Method, uri: r.URL.RequestURI(), header: r.Header.Clone(), body: body})
		p.mu.Unlock()
		req, err := http.NewRequestWithContext(r.Context(), r.Method, e.bus.HTTPURL+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := up.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	leaf := e.ca.Server(e.t, "capture proxy", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	srv.StartTLS()
	e.t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *captureProxy) find(method, uriPrefix string) (captured, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.reqs {
		if c.method == method && strings.HasPrefix(c.uri, uriPrefix) {
			return c, true
		}
	}
	return captured{}, false
}

// signedHeaders are the headers of a request from u signed by the SDK's
// signer for this deployment, with its clock set by now (nil: the real
// clock).
func (e *env) signedHeaders(u *user, key ed25519.PrivateKey, method, path string, body []byte, now func() time.Time) []header {
	return e.taggedHeaders(u, key, e.tag, method, path, body, now)
}

// taggedHeaders is signedHeaders with the deployment tag given ("": none,
// as a protocol 1 client signs).
func (e *env) taggedHeaders(u *user, key ed25519.PrivateKey, tag, method, path string, body []byte, now func() time.Time) []header {
	req, err := http.NewRequest(method, e.bus.HTTPURL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key == nil {
		key = u.id.SigningKey()
	}
	s := &httpsig.Signer{KeyID: u.hex, Key: key, Now: now, Tag: tag}
	if err := s.Sign(req, body); err != nil {
		e.t.Fatal(err)
	}
	return requestHeaders(req.Header, body != nil)
}

// requestHeaders keeps what a signed request needs, in a fixed order.
func requestHeaders(h http.Header, withBody bool) []header {
	var out []header
	if withBody {
		out = append(out, header{"Content-Type", "application/json"})
	}
	for _, k := range []string{"Content-Digest", "Signature-Input", "Signature"} {
		for _, v := range h.Values(k) {
			out = append(out, header{k, v})
		}
	}
	return out
}

// customSigned signs a request covering exactly components, with alg as
// given and the deployment tag, the way a client that skips components
// would.
func (e *env) customSigned(u *user, method, path string, body []byte, components []string, alg string) []header {
	req, err := http.NewRequest(method, e.bus.HTTPURL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Digest", httpsig.ContentDigest(body))
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	params := httpsfv.NewParams()
	params.Add("created", time.Now().Unix())
	params.Add("nonce", base64.RawURLEncoding.EncodeToString(nonce))
	params.Add("keyid", u.hex)
	params.Add("alg", alg)
	params.Add("tag", e.tag)
	items := make([]httpsfv.Item, len(components))
	for i, c := range components {
		items[i] = httpsfv.NewItem(c)
	}
	list := httpsfv.InnerList{Items: items, Params: params}
	sigParams, err := httpsfv.Marshal(list)
	if err != nil {
		e.t.Fatal(err)
	}
	base, err := httpsig.SignatureBase(req, components, sigParams)
	if err != nil {
		e.t.Fatal(err)
	}
	in := httpsfv.NewDictionary()
	in.Add(httpsig.Label, list)
	sig := httpsfv.NewDictionary()
	sig.Add(httpsig.Label, httpsfv.NewItem(ed25519.Sign(u.id.SigningKey(), base)))
	inF, _ := httpsfv.Marshal(in)
	sigF, _ := httpsfv.Marshal(sig)
	req.Header.Set("Signature-Input", inF)
	req.Header.Set("Signature", sigF)
	return requestHeaders(req.Header, len(body) > 0)
}

var fileSeq atomic.Int64

// writeTemp writes content to a new file under the test's directory.
func (e *env) writeTemp(name string, content []byte) string {
	p := filepath.Join(e.dir, fmt.Sprintf("%s-%d", name, fileSeq.Add(1)))
	if err := os.WriteFile(p, content, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// httpResult is curl's view of one request.
type httpResult struct {
	result
	status int
	body   string
}

// outcome is "<status> <error code>", or the curl failure.
func (h httpResult) outcome() string {
	if h.status == 0 {
		return fmt.Sprintf("no HTTP answer (curl exit %d)", h.code)
	}
	var we wire.Error
	if json.Unmarshal([]byte(h.body), &we) == nil && we.Error.Code != "" {
		return fmt.Sprintf("%d %s", h.status, we.Error.Code)
	}
	return strconv.Itoa(h.status)
}

// curl sends one request with curl: headers from a file (-H @file), the
// body from a file, the CA of the test (or caFile when set).
func (e *env) curl(method, url string, hdrs []header, body []byte, extra ...string) httpResult {
	var hb strings.Builder
	for _, h := range hdrs {
		hb.WriteString(h[0] + ": " + h[1] + "\n")
	}
	out := filepath.Join(e.dir, fmt.Sprintf("curl-out-%d", fileSeq.Add(1)))
	args := []string{"-q", "-sS", "--cacert", e.caCrt, "--max-time", "20", "-o", out, "-w", "%{http_code}", "-X", method}
	if len(hdrs) > 0 {
		args = append(args, "-H", "@"+e.writeTemp("headers", []byte(hb.String())))
	}
	if body != nil {
		args = append(args, "--data-binary", "@"+e.writeTemp("body", body))
	}
	args = append(args, extra...)
	args = append(args, url)
	r := httpResult{result: e.run(30*time.Second, nil, e.tl.curl, args...)}
	r.status, _ = strconv.Atoi(strings.TrimSpace(r.stdout))
	b, _ := os.ReadFile(out)
	r.body = string(b)
	return r
}

// addUserBody is an admin request that would register handle as an admin:
// the state change every control-plane attack tries to make.
func addUserBody(handle string) []byte {
	id, _ := identity.Generate()
	b, _ := json.Marshal(wire.AddUserRequest{Handle: handle, SignPub: id.SignPub().String(), Role: "admin"})
	return b
}

// userExists asks the control plane, as the admin, whether handle exists.
func (e *env) userExists(handle string) bool {
	return e.userExistsAt(e.bus.HTTPURL, e.tag, handle)
}

// userExistsAt asks the membershipd at base (deployment tag tag), as the
// admin, whether handle exists.
func (e *env) userExistsAt(base, tag, handle string) bool {
	st, code := e.apiAt(base, tag, e.admin, "GET", "/v1/users/"+handle, nil, nil)
	if st != http.StatusOK && code != wire.CodeNotFound {
		e.t.Errorf("look up %s at %s: %d %s", handle, base, st, code)
	}
	return st == http.StatusOK
}

// httpAttack is one request the control plane must refuse.
type httpAttack struct {
	id, attack, tool string
	want             string // expected outcome, e.g. "401 stale_signature"
	expect           string // for the table
	send             func() httpResult
	victim           string // a handle the attack tries to register ("" if none)
}

func (e *env) runHTTPAttack(at httpAttack) Row {
	r := at.send()
	row := Row{ID: at.id, Plane: "HTTP", Attack: at.attack, Tool: at.tool, Expected: at.expect}
	got := r.outcome()
	switch {
	case at.victim != "" && e.userExists(at.victim):
		row.Verdict, row.Observed = FailOpen, got+"; user "+at.victim+" was registered"
	case r.status >= 200 && r.status < 300:
		row.Verdict, row.Observed = FailOpen, got
	case got == at.want:
		row.Verdict, row.Observed = Pass, got
	default:
		row.Verdict, row.Observed = FailDenial, got
	}
	return row
}

// httpAttacks runs the signed-request and framing attacks with curl and
// openssl against the control plane.
func (e *env) httpAttacks(rep *Report) {
	adminURL := e.bus.HTTPURL + "/v1/users"
	proxy := e.startCaptureProxy()

	// H01: the CLI, through the capture proxy, registers carol.
	carol, _ := identity.Generate()
	r := harness.Run(e.t, e.dir, append(e.cliEnv(e.admin), "UNIBUS_SERVER="+proxy.url), "", "unibus",
		"user", "add", "--handle", "carol", "--sign-pub", carol.SignPub().String())
	add, okAdd := proxy.find("POST", "/v1/users")
	me, okMe := proxy.find("GET", "/v1/me")
	v := Pass
	if r.Code != 0 || !okAdd || !okMe || !e.userExists("carol") {
		v = FailControl
	}
	rep.Add(Row{ID: "H01", Plane: "HTTP", Attack: "control: the admin's CLI registers carol through a capturing proxy", Tool: "unibus user add",
		Expected: "allowed; the signed requests are captured", Observed: fmt.Sprintf("exit %d; captured GET /v1/me=%v, POST /v1/users=%v", r.Code, okMe, okAdd), Verdict: v})
	if !okAdd || !okMe {
		e.t.Errorf("capture failed; CLI said: %s%s", r.Stdout, r.Stderr)
		return
	}

	// H02: curl delivers a fresh signed request: the plumbing works.
	body := addUserBody("rt-h02")
	c := e.curl("POST", adminURL, e.signedHeaders(e.admin, nil, "POST", "/v1/users", body, nil), body)
	v = Pass
	if c.status != 201 || !e.userExists("rt-h02") {
		v = FailControl
	}
	rep.Add(Row{ID: "H02", Plane: "HTTP", Attack: "control: curl sends a fresh request signed by the admin, tagged for this deployment", Tool: "curl",
		Expected: "allowed (201)", Observed: c.outcome(), Verdict: v})

	capHeaders := func(c captured) []header { return requestHeaders(c.header, len(c.body) > 0) }
	stale := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	attacker, _ := identity.Generate()
	attacks := []httpAttack{
		{id: "H10", attack: "replay the CLI's captured `POST /v1/users`", tool: "curl", want: "409 replay",
			expect: "409 replay (nonce already used)",
			send:   func() httpResult { return e.curl("POST", adminURL, capHeaders(add), add.body) }},
		{id: "H11", attack: "replay the CLI's captured `GET /v1/me`", tool: "curl", want: "409 replay", expect: "409 replay",
			send: func() httpResult { return e.curl("GET", e.bus.HTTPURL+"/v1/me", capHeaders(me), nil) }},
		{id: "H12", attack: "reuse the captured signature and body on another path (revoke bob)", tool: "curl", want: "401 bad_signature",
			expect: "401 bad_signature (@path is covered)",
			send: func() httpResult {
				return e.curl("POST", e.bus.HTTPURL+"/v1/users/"+e.bob.hex+"/revoke", capHeaders(add), add.body)
			}},
		{id: "H13", attack: "replay with a second Signature-Input line carrying a fresh nonce", tool: "curl", want: "401 bad_signature",
			expect: "401: the parameters no longer match the signature",
			send: func() httpResult {
				fresh := e.signedHeaders(e.admin, nil, "POST", "/v1/users", add.body, nil)
				h := capHeaders(add)
				for _, f := range fresh {
					if f[0] == "Signature-Input" {
						h = append(h, f)
					}
				}
				return e.curl("POST", adminURL, h, add.body)
			}},
	}
	victim := func(id, attack, want, expect string, hdrs func(body []byte) []header) httpAttack {
		handle := "rt-" + strings.ToLower(id)
		return httpAttack{id: id, attack: attack, tool: "curl", want: want, expect: expect, victim: handle, send: func() httpResult {
			body := addUserBody(handle)
			return e.curl("POST", adminURL, hdrs(body), body)
		}}
	}
	attacks = append(attacks,
		victim("H20", "`created` 120 s in the past", "401 stale_signature", "401 stale_signature (±60 s)",
			func(b []byte) []header {
				return e.signedHeaders(e.admin, nil, "POST", "/v1/users", b, stale(-120*time.Second))
			}),
		victim("H21", "`created` 120 s in the future", "401 stale_signature", "401 stale_signature (±60 s)",
			func(b []byte) []header {
				return e.signedHeaders(e.admin, nil, "POST", "/v1/users", b, stale(120*time.Second))
			}),
		victim("H30", "signature that does not cover `@query`", "401 unauthorized", "401: @method @path @query required",
			func(b []byte) []header {
				return e.customSigned(e.admin, "POST", "/v1/users", b, []string{"@method", "@path", "content-digest"}, "ed25519")
			}),
		victim("H31", "signature that does not cover the body's `content-digest`", "401 unauthorized", "401: a body needs content-digest covered",
			func(b []byte) []header {
				return e.customSigned(e.admin, "POST", "/v1/users", b, []string{"@method", "@path", "@query"}, "ed25519")
			}),
		victim("H32", "signature covering only `@method`", "401 unauthorized", "401 unauthorized",
			func(b []byte) []header {
				return e.customSigned(e.admin, "POST", "/v1/users", b, []string{"@method"}, "ed25519")
			}),
		victim("H33", "no signature at all", "401 unauthorized", "401 unauthorized",
			func(b []byte) []header { return []header{{"Content-Type", "application/json"}} }),
		victim("H34", "signature by another key under the admin's keyid", "401 bad_signature", "401 bad_signature",
			func(b []byte) []header {
				return e.signedHeaders(e.admin, attacker.SigningKey(), "POST", "/v1/users", b, nil)
			}),
		victim("H35", "`alg=\"hmac-sha256\"`", "401 unauthorized", "401: only ed25519",
			func(b []byte) []header {
				return e.customSigned(e.admin, "POST", "/v1/users", b, []string{"@method", "@path", "@query", "content-digest"}, "hmac-sha256")
			}),
		victim("H40", "duplicate `Signature` headers: the admin's, then a forged one", "401 bad_signature",
			"401, never two readings of one request",
			func(b []byte) []header {
				h := e.signedHeaders(e.admin, nil, "POST", "/v1/users", b, nil)
				forged := e.signedHeaders(e.admin, attacker.SigningKey(), "POST", "/v1/users", b, nil)
				return append(h, forged[len(forged)-1])
			}),
		victim("H41", "a second signature under another label", "401 unauthorized", "401: exactly one signature",
			func(b []byte) []header {
				h := e.signedHeaders(e.admin, nil, "POST", "/v1/users", b, nil)
				for i := range h {
					if h[i][0] == "Signature-Input" || h[i][0] == "Signature" {
						v := h[i][1]
						h = append(h, header{h[i][0], "evil" + strings.TrimPrefix(v, httpsig.Label)})
					}
				}
				return h
			}),
		victim("H46", "oversized `Signature-Input` (8 KiB)", "401 unauthorized", "401: signature fields ≤ 4 KiB",
			func(b []byte) []header {
				h := e.signedHeaders(e.admin, nil, "POST", "/v1/users", b, nil)
				for i := range h {
					if h[i][0] == "Signature-Input" {
						h[i][1] += `;x="` + strings.Repeat("x", 8<<10) + `"`
					}
				}
				return h
			}),
	)
	for _, at := range attacks {
		rep.Add(e.runHTTPAttack(at))
	}
	e.framingAttacks(rep)
	e.roomAttacks(rep)
	e.deploymentAttacks(rep, add)
}

var statusLine = regexp.MustCompile(`HTTP/1\.[01] (\d{3})`)

// opensslRaw sends raw bytes over TLS with openssl s_client and returns
// the status codes of the responses, in order.
func (e *env) opensslRaw(raw string) (result, []string) {
	host := strings.TrimPrefix(e.bus.HTTPURL, "https://")
	r := e.run(20*time.Second, strings.NewReader(raw), e.tl.openssl, "s_client", "-quiet", "-connect", host,
		"-CAfile", e.caCrt, "-verify_return_error")
	var codes []string
	for _, m := range statusLine.FindAllStringSubmatch(r.stdout, -1) {
		codes = append(codes, m[1])
	}
	return r, codes
}

// framingAttacks are HTTP/1.1 framing attacks: smuggling, conflicting
// lengths, huge headers, plaintext on the TLS port.
func (e *env) framingAttacks(rep *Report) {
	add := func(id, attack, tool, expect string, ok bool, failV Verdict, observed string) {
		v := Pass
		if !ok {
			v = failV
		}
		rep.Add(Row{ID: id, Plane: "HTTP", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}

	// CL.TE: the chunked body ends at once; what follows is a second,
	// unsigned request that would register an admin. It must be read as a
	// request of its own and refused on its own.
	smuggled := addUserBody("rt-h42")
	raw := "POST /v1/users HTTP/1.1\r\nHost: unibus\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\n" +
		"POST /v1/users HTTP/1.1\r\nHost: unibus\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(smuggled)) + "\r\n\r\n" + string(smuggled)
	r, codes := e.opensslRaw(raw)
	joined := strings.Join(codes, ", ")
	ok := !e.userExists("rt-h42")
	failV := FailOpen
	if ok {
		ok, failV = joined == "401, 401", FailDenial
	}
	add("H42", "request smuggling: `Content-Length` + `Transfer-Encoding: chunked`, a second unsigned admin request behind it", "openssl s_client",
		"each request authenticated on its own: 401, 401; nothing registered", ok, failV, "responses: "+orNone(joined)+exitNote(r))

	r, codes = e.opensslRaw("POST /v1/users HTTP/1.1\r\nHost: unibus\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd")
	joined = strings.Join(codes, ", ")
	add("H43", "two different `Content-Length` headers", "openssl s_client", "400, connection closed",
		joined == "400", FailDenial, "responses: "+orNone(joined))

	r, codes = e.opensslRaw("POST /v1/users HTTP/1.1\r\nHost: unibus\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n")
	joined = strings.Join(codes, ", ")
	add("H44", "`Transfer-Encoding: chunked` and `identity`", "openssl s_client", "501, connection closed",
		joined == "501", FailDenial, "responses: "+orNone(joined))

	big := e.curl("GET", e.bus.HTTPURL+"/healthz", []header{{"X-Big", strings.Repeat("a", 100<<10)}}, nil)
	health := e.curl("GET", e.bus.HTTPURL+"/healthz", nil, nil)
	add("H45", "a 100 KiB header", "curl", "431; the server keeps serving",
		big.status == 431 && health.status == 200, FailDenial, fmt.Sprintf("%s; /healthz then %d", big.outcome(), health.status))

	plain := e.run(20*time.Second, nil, e.tl.curl, "-q", "-sS", "-w", "\n%{http_code}", strings.Replace(e.bus.HTTPURL, "https://", "http://", 1)+"/healthz")
	served := strings.Contains(plain.stdout, `"status"`)
	add("H60", "plaintext HTTP to the TLS port", "curl http://", "400 \"Client sent an HTTP request to an HTTPS server\"; nothing served",
		!served && strings.HasSuffix(strings.TrimSpace(plain.stdout), "400"), map[bool]Verdict{true: FailOpen, false: FailDenial}[served],
		strings.Join(strings.Fields(plain.stdout), " "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func exitNote(r result) string {
	if r.code == -1 {
		return " (killed after 20 s)"
	}
	return ""
}

// slowAttacks hold connections open by sending slowly; the server must
// cut them off at its deadlines. They take up to 40 s each, so they run
// side by side.
func (e *env) slowAttacks(rep *Report) {
	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }

	// trickle writes first, then one piece of rest every second, until
	// the reader is closed.
	trickle := func(first string, piece func(i int) string) (io.Reader, func()) {
		pr, pw := io.Pipe()
		go func() {
			if _, err := pw.Write([]byte(first)); err != nil {
				return
			}
			for i := 0; i < 60; i++ {
				time.Sleep(time.Second)
				if _, err := pw.Write([]byte(piece(i))); err != nil {
					return
				}
			}
			pw.Close()
		}()
		return pr, func() { pr.Close() }
	}
	host := strings.TrimPrefix(e.bus.HTTPURL, "https://")

	run(func() {
		in, stop := trickle("GET /healthz HTTP/1.1\r\nHost: unibus\r\n", func(i int) string { return fmt.Sprintf("X-Slow-%d: x\r\n", i) })
		r := e.run(45*time.Second, in, e.tl.openssl, "s_client", "-quiet", "-connect", host, "-CAfile", e.caCrt, "-verify_return_error")
		stop()
		answered := statusLine.MatchString(r.stdout)
		ok := r.code != -1 && r.elapsed < 20*time.Second && !answered
		obs := "closed by the server within 20 s, no response"
		if !ok {
			obs = fmt.Sprintf("held for %s (exit %d, answered=%v)", r.elapsed.Round(time.Second), r.code, answered)
		}
		rep.Add(Row{ID: "H50", Plane: "HTTP", Attack: "slowloris: headers sent one line per second, never finished", Tool: "openssl s_client",
			Expected: "connection closed at the 10 s header deadline", Observed: obs, Verdict: map[bool]Verdict{true: Pass, false: FailOpen}[ok]})
	})

	run(func() {
		in, stop := trickle("{", func(int) string { return " " })
		r := e.run(75*time.Second, in, e.tl.curl, "-q", "-sS", "--cacert", e.caCrt, "-o", os.DevNull, "-w", "%{http_code}",
			"-X", "POST", "-T", "-", "-H", "Content-Type: application/json", "-H", "Content-Length: 1000", e.bus.HTTPURL+"/v1/users")
		stop()
		// Cut off: the connection closed under curl (it fails), or the
		// server answered 400 "could not read the request body" in the
		// instant between its read and its write deadline (both 30 s):
		// which one is a race of a few microseconds.
		status := strings.TrimSpace(r.stdout)
		ok := r.elapsed < 40*time.Second && (r.code > 0 || status == "400")
		obs := "the server stopped reading within 40 s (the connection cut, or 400)"
		if !ok {
			obs = fmt.Sprintf("held for %s (curl exit %d, %s)", r.elapsed.Round(time.Second), r.code, strings.TrimSpace(r.stdout))
		}
		rep.Add(Row{ID: "H51", Plane: "HTTP", Attack: "slow body: 1 byte per second of a declared 1000 (unsigned POST /v1/users)", Tool: "curl -T -",
			Expected: "cut off at the 30 s body deadline", Observed: obs, Verdict: map[bool]Verdict{true: Pass, false: FailOpen}[ok]})
	})

	run(func() {
		in, stop := trickle("x", func(int) string { return "x" })
		id := strings.Repeat("ab", 32)
		r := e.run(75*time.Second, in, e.tl.curl, "-q", "-sS", "--cacert", e.caCrt, "-o", os.DevNull, "-w", "%{http_code}",
			"-X", "PUT", "-T", "-", "-H", "Content-Length: 1000000", e.bus.HTTPURL+"/v1/rooms/"+e.roomA+"/blobs/"+id)
		stop()
		code := strings.TrimSpace(r.stdout)
		ok := code == "401" && r.elapsed < 10*time.Second
		obs := "401 before the body"
		if !ok {
			obs = fmt.Sprintf("%s after %s (curl exit %d)", code, r.elapsed.Round(time.Second), r.code)
		}
		rep.Add(Row{ID: "H52", Plane: "HTTP", Attack: "slow upload to the blob endpoint (its deadline is 2 h) without a valid signature", Tool: "curl -T -",
			Expected: "401 before any body is read", Observed: obs, Verdict: map[bool]Verdict{true: Pass, false: FailOpen}[ok]})
	})
	wg.Wait()
}

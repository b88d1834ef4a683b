package httpsig

import (
	"net/http"
	"net/textproto"
	"strings"
)

// Derived component identifiers (RFC 9421 §2.2) that SignatureBase supports.
const (
	compMethod        = "@method"
	compAuthority     = "@authority"
	compScheme        = "@scheme"
	compTargetURI     = "@target-uri"
	compRequestTarget = "@request-target"
	compPath          = "@path"
	compQuery         = "@query"
	compSigParams     = "@signature-params"
	compContentDigest = "content-digest"
)

// derived computes each supported derived component's value from a request.
var derived = map[string]func(*http.Request) (string, error){
	compMethod:        method,
	compAuthority:     authority,
	compScheme:        func(req *http.Request) (string, error) { return scheme(req), nil },
	compTargetURI:     targetURI,
	compRequestTarget: requestTarget,
	compPath:          path,
	compQuery:         query,
}

// SignatureBase builds the RFC 9421 §2.5 signature base for the given covered
// components and the serialized signature-params inner list (the value of
// @signature-params), from req. Supports derived components @method
// @authority @scheme @target-uri @request-target @path @query, and HTTP field
// names (lowercase, combined per RFC 9421 §2.1 with ", " for multiple values).
// Unknown derived components or absent fields are errors.
//
// Components are bare identifiers without quotes or parameters ("@path",
// "content-type"). Every error wraps [ErrMalformed].
func SignatureBase(req *http.Request, components []string, signatureParams string) ([]byte, error) {
	if req == nil || req.URL == nil {
		return nil, detail(ErrMalformed, "no request to sign")
	}
	if breaksBase(signatureParams) {
		return nil, detail(ErrMalformed, "signature parameters contain a line break")
	}
	size := len(`"@signature-params": `) + len(signatureParams)
	values := make([]string, len(components))
	for i, c := range components {
		for _, prev := range components[:i] {
			if prev == c {
				return nil, detail(ErrMalformed, "component %s is covered twice; list each component once", quoteShort(c))
			}
		}
		v, err := componentValue(req, c)
		if err != nil {
			return nil, err
		}
		values[i] = v
		size += len(c) + len(v) + len(`"": `+"\n")
	}

	base := make([]byte, 0, size)
	for i, c := range components {
		base = append(base, '"')
		base = append(base, c...)
		base = append(base, `": `...)
		base = append(base, values[i]...)
		base = append(base, '\n')
	}
	base = append(base, `"@signature-params": `...)
	base = append(base, signatureParams...)
	return base, nil
}

// componentValue returns the value of one covered component of req.
func componentValue(req *http.Request, name string) (string, error) {
	var v string
	var err error
	switch {
	case name == compSigParams:
		return "", detail(ErrMalformed, `"@signature-params" cannot be a covered component`)
	case strings.HasPrefix(name, "@"):
		f, ok := derived[name]
		if !ok {
			return "", detail(ErrMalformed, "unsupported derived component %s; use @method @authority @scheme @target-uri @request-target @path @query", quoteShort(name))
		}
		v, err = f(req)
	default:
		v, err = fieldValue(req, name)
	}
	if err != nil {
		return "", err
	}
	if breaksBase(v) {
		return "", detail(ErrMalformed, "component %s has a line break in its value", quoteShort(name))
	}
	return v, nil
}

// fieldValue is the value of HTTP field name (RFC 9421 §2.1): every field line
// with leading and trailing whitespace removed, joined by ", ".
func fieldValue(req *http.Request, name string) (string, error) {
	if !isFieldName(name) {
		return "", detail(ErrMalformed, "component %s is not a lowercase HTTP field name", quoteShort(name))
	}
	lines := req.Header[textproto.CanonicalMIMEHeaderKey(name)]
	if len(lines) == 0 && name == "host" && req.Host != "" {
		// net/http keeps Host out of Header on both sides of the wire.
		lines = []string{req.Host}
	}
	if len(lines) == 0 {
		return "", detail(ErrMalformed, "covered field %s is not in the request; send it or stop covering it", quoteShort(name))
	}
	if len(lines) == 1 {
		return strings.Trim(lines[0], " \t"), nil
	}
	trimmed := make([]string, len(lines))
	for i, l := range lines {
		trimmed[i] = strings.Trim(l, " \t")
	}
	return strings.Join(trimmed, ", "), nil
}

func method(req *http.Request) (string, error) {
	if req.Method == "" {
		return http.MethodGet, nil // net/http sends GET for an empty Method
	}
	return req.Method, nil
}

// scheme is the URI scheme, lowercase: the URL's on a client request, and on
// a server request "https" when the connection is TLS, else "http".
func scheme(req *http.Request) string {
	if req.URL.Scheme != "" {
		return strings.ToLower(req.URL.Scheme)
	}
	if req.TLS != nil {
		return "https"
	}
	return "http"
}

// authority is the target host (and port unless it is the scheme's default),
// lowercase (RFC 9421 §2.2.3).
func authority(req *http.Request) (string, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host == "" {
		return "", detail(ErrMalformed, "request has no host for @authority")
	}
	host = strings.ToLower(host)
	switch scheme(req) {
	case "https":
		host = strings.TrimSuffix(host, ":443")
	case "http":
		host = strings.TrimSuffix(host, ":80")
	}
	return host, nil
}

// path is the absolute path as sent, still percent-encoded; "/" when empty.
func path(req *http.Request) (string, error) {
	if req.URL.Opaque != "" {
		return "", errOpaque
	}
	p := req.URL.EscapedPath()
	if p == "" {
		return "/", nil
	}
	return p, nil
}

// query is "?" and the raw query as sent; "?" alone when there is none.
func query(req *http.Request) (string, error) {
	if req.URL.Opaque != "" {
		return "", errOpaque
	}
	return "?" + req.URL.RawQuery, nil
}

// requestTarget is the request-target as on the request line.
func requestTarget(req *http.Request) (string, error) {
	if req.RequestURI != "" {
		return req.RequestURI, nil
	}
	return req.URL.RequestURI(), nil
}

// targetURI is the full target URI (RFC 9421 §2.2.2).
func targetURI(req *http.Request) (string, error) {
	a, err := authority(req)
	if err != nil {
		return "", err
	}
	p, err := path(req)
	if err != nil {
		return "", err
	}
	uri := scheme(req) + "://" + a + p
	if req.URL.RawQuery != "" || req.URL.ForceQuery {
		uri += "?" + req.URL.RawQuery
	}
	return uri, nil
}

var errOpaque = detail(ErrMalformed, "opaque request URLs are not supported; use a URL with an absolute path")

// isFieldName reports whether s is a non-empty RFC 9110 token with no
// uppercase letters.
func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// breaksBase reports whether s holds a CR, LF or NUL, which could forge extra
// lines in a signature base.
func breaksBase(s string) bool {
	return strings.ContainsAny(s, "\r\n\x00")
}

// Package httpsig signs and verifies unibus control-plane requests with HTTP
// Message Signatures (RFC 9421), algorithm ed25519, binding the request body
// through a Content-Digest field (RFC 9530, sha-256).
//
// It implements exactly unibus's profile (docs/DESIGN.md): one signature labelled
// [Label], covering "@method", "@path", "@query" and, with a body,
// "content-digest", with the created, nonce and keyid parameters and the
// tag that binds the request to one deployment. A [Verifier] checks the
// signature, the clock window, the tag and the digest; it does
// not remember nonces: the caller records (keyid, nonce) in its replay store
// after [Verifier.Verify] succeeds, and denies the request when it cannot.
//
// The package is not a general RFC 9421 implementation: it has no response
// signatures, no component parameters (;sf ;key ;bs ;req ;name), no
// @query-param or @status, and no algorithm other than ed25519.
//
// The RFC 9421 libraries we would otherwise use (github.com/dadrus/httpsig,
// github.com/yaronf/httpsign) could not be fetched from our module proxy,
// so the signature base (RFC 9421 §2.5) is written here by hand and checked
// byte for byte against the RFC's Appendix B.2.6 vector. The structured
// fields it travels in (Signature-Input, Signature, Content-Digest) are
// parsed and serialized by github.com/dunglas/httpsfv (RFC 8941/9651), so no
// structured-field grammar is hand-written.
package httpsig

import "time"

// Label is the signature label we emit ("sig1"). The verifier accepts exactly
// one signature labelled Label.
const Label = "sig1"

// DefaultWindow is the clock skew a [Verifier] accepts when its Window is 0:
// a signature's created time must be within ±DefaultWindow of now.
const DefaultWindow = 60 * time.Second

// Limits on what a [Verifier] will parse. Anything longer is refused before
// any key lookup or signature check.
const (
	// MaxSignatureHeaderBytes bounds the Signature-Input and the Signature
	// header, each (all field lines together); longer is ErrMalformed.
	MaxSignatureHeaderBytes = 4096
	// MaxContentDigestBytes bounds the Content-Digest header; longer is
	// ErrDigest.
	MaxContentDigestBytes = 1024
	// MaxComponents bounds the number of covered components; more is
	// ErrMalformed.
	MaxComponents = 32
	// MaxNonceBytes bounds the nonce parameter; longer is ErrMalformed.
	MaxNonceBytes = 128
	// MaxKeyIDBytes bounds the keyid parameter; longer is ErrMalformed.
	MaxKeyIDBytes = 256
	// MaxTagBytes bounds the tag parameter; longer is ErrMalformed.
	MaxTagBytes = 128
)

// algorithm is the RFC 9421 §6.2 registry name of the only algorithm we use.
const algorithm = "ed25519"

// nonceBytes is how many random bytes a [Signer] puts in a nonce (22
// characters of unpadded base64url).
const nonceBytes = 16

// Header names.
const (
	headerSignatureInput = "Signature-Input"
	headerSignature      = "Signature"
	headerContentDigest  = "Content-Digest"
)

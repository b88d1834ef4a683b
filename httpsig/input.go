package httpsig

import (
	"github.com/dunglas/httpsfv"
)

// sigInput is the parsed Signature-Input member of one signature.
type sigInput struct {
	components []string
	// params is the canonical serialization of the inner list, the value
	// of "@signature-params" in the signature base.
	params string

	created, expires       int64
	hasCreated, hasExpires bool
	nonce, keyID, alg, tag string
	hasAlg                 bool
}

// parseSignatureInput parses the Signature-Input field lines and returns the
// one signature, which must be labelled label ([Label], except for the RFC
// vectors in tests). Errors wrap [ErrMalformed], or [ErrMissingSignature]
// when there are no lines.
func parseSignatureInput(lines []string, label string) (sigInput, error) {
	var in sigInput
	m, err := onlyMember(headerSignatureInput, lines, label)
	if err != nil {
		return in, err
	}
	list, ok := m.(httpsfv.InnerList)
	if !ok {
		return in, detail(ErrMalformed, "Signature-Input must hold an inner list of component names")
	}
	if len(list.Items) > MaxComponents {
		return in, detail(ErrMalformed, "Signature-Input covers %d components; at most %d are accepted", len(list.Items), MaxComponents)
	}
	in.components = make([]string, len(list.Items))
	for i, item := range list.Items {
		name, ok := item.Value.(string)
		if !ok {
			return in, detail(ErrMalformed, "Signature-Input component %d is not a string; quote component names", i+1)
		}
		if len(paramNames(item.Params)) > 0 {
			return in, detail(ErrMalformed, "component %s has parameters; component parameters (;sf ;key ;bs ;req ;name) are not supported", quoteShort(name))
		}
		for _, prev := range in.components[:i] {
			if prev == name {
				return in, detail(ErrMalformed, "component %s is covered twice; list each component once", quoteShort(name))
			}
		}
		in.components[i] = name
	}

	for _, k := range paramNames(list.Params) {
		v, _ := list.Params.Get(k)
		var ok bool
		switch k {
		case "created":
			in.created, ok = v.(int64)
			in.hasCreated = true
		case "expires":
			in.expires, ok = v.(int64)
			in.hasExpires = true
		case "nonce":
			in.nonce, ok = v.(string)
			if ok && len(in.nonce) > MaxNonceBytes {
				return in, detail(ErrMalformed, "nonce is longer than %d bytes", MaxNonceBytes)
			}
		case "keyid":
			in.keyID, ok = v.(string)
			if ok && len(in.keyID) > MaxKeyIDBytes {
				return in, detail(ErrMalformed, "keyid is longer than %d bytes", MaxKeyIDBytes)
			}
		case "alg":
			in.alg, ok = v.(string)
			in.hasAlg = true
		case "tag":
			in.tag, ok = v.(string)
			if ok && len(in.tag) > MaxTagBytes {
				return in, detail(ErrMalformed, "tag is longer than %d bytes", MaxTagBytes)
			}
		default:
			return in, detail(ErrMalformed, "unsupported signature parameter %s; use created, expires, nonce, keyid, alg, tag", quoteShort(k))
		}
		if !ok {
			return in, detail(ErrMalformed, "signature parameter %s has the wrong type (created and expires are integers, the others strings)", k)
		}
	}

	// The signature base carries the parameters as we serialize them
	// (RFC 9421 §2.3), not as the client spaced them.
	in.params, err = httpsfv.Marshal(list)
	if err != nil {
		return in, detail(ErrMalformed, "Signature-Input cannot be re-serialized: %v", err)
	}
	return in, nil
}

// parseSignature parses the Signature field lines and returns the bytes of the
// one signature, which must be labelled label. Errors wrap [ErrMalformed].
func parseSignature(lines []string, label string) ([]byte, error) {
	m, err := onlyMember(headerSignature, lines, label)
	if err != nil {
		return nil, err
	}
	item, ok := m.(httpsfv.Item)
	if !ok {
		return nil, detail(ErrMalformed, "Signature must hold a byte sequence (:base64:)")
	}
	sig, ok := item.Value.([]byte)
	if !ok {
		return nil, detail(ErrMalformed, "Signature must hold a byte sequence (:base64:)")
	}
	if len(paramNames(item.Params)) > 0 {
		return nil, detail(ErrMalformed, "the signature must have no parameters")
	}
	return sig, nil
}

// onlyMember parses a signature dictionary field and returns its member
// labelled label, which must be its only member.
func onlyMember(field string, lines []string, label string) (httpsfv.Member, error) {
	if len(lines) == 0 {
		return nil, detail(ErrMissingSignature, "no %s header", field)
	}
	if fieldLen(lines) > MaxSignatureHeaderBytes {
		return nil, detail(ErrMalformed, "%s is longer than %d bytes", field, MaxSignatureHeaderBytes)
	}
	dict, err := httpsfv.UnmarshalDictionary(lines)
	if err != nil {
		return nil, detail(ErrMalformed, "%s is not a structured-field dictionary: %v", field, err)
	}
	names := dict.Names()
	if len(names) != 1 || names[0] != label {
		return nil, detail(ErrMalformed, "%s must hold exactly one signature, labelled %q; it has %d", field, label, len(names))
	}
	m, _ := dict.Get(label)
	return m, nil
}

// paramNames is p.Names(), safe on a nil p.
func paramNames(p *httpsfv.Params) []string {
	if p == nil {
		return nil
	}
	return p.Names()
}

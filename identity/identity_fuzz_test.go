package identity

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

// identityVector is an entry of ../e2e/testdata/vectors.json.
type identityVector struct {
	Seed       string `json:"seed"`
	NKeySeed   string `json:"nkey_seed"`
	SignPub    string `json:"sign_pub"`
	NKey       string `json:"nkey"`
	KEMPub     string `json:"kem_pub"`
	KEMBinding string `json:"kem_binding_sig"`
}

// identityVectors reads the identity vectors, the seeds of the fuzz targets.
func identityVectors(tb testing.TB) []identityVector {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "e2e", "testdata", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var vf struct {
		Identities []identityVector `json:"identities"`
	}
	if err := json.Unmarshal(raw, &vf); err != nil {
		tb.Fatal(err)
	}
	if len(vf.Identities) == 0 {
		tb.Fatal("no identity vectors")
	}
	return vf.Identities
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkSeed is the property shared by FuzzParseSeed and FuzzLoad: an
// accepted seed string is a NATS user seed, and the identity is the one
// NATS derives from the same text (the file is also a NATS credential);
// its own seed string parses back to it.
func checkSeed(t *testing.T, s []byte, id *Identity) {
	t.Helper()
	kp, err := nkeys.FromSeed(s)
	if err != nil {
		t.Fatalf("accepted %q, which nkeys refuses: %v", s, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || pub != id.NKey() {
		t.Fatalf("accepted %q as %s, nkeys derives %s (%v)", s, id.NKey(), pub, err)
	}
	again, err := id.seedString()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSeed(again)
	if err != nil || back.SignPub() != id.SignPub() || !back.KEMPub().Equal(id.KEMPub()) || back.seed != id.seed {
		t.Fatalf("the identity's own seed string does not parse back to it: %v", err)
	}
}

// FuzzParseSeed: identity file contents. ParseSeed never panics; it
// accepts only NATS user seeds, as the identity NATS derives from them.
func FuzzParseSeed(f *testing.F) {
	for _, v := range identityVectors(f) {
		f.Add([]byte(v.NKeySeed))
	}
	f.Add(mustSeed(f, nkeys.CreateAccount))
	f.Add(mustSeed(f, nkeys.CreateOperator))
	f.Add([]byte("SU"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, s []byte) {
		id, err := ParseSeed(s)
		if err != nil {
			if id != nil {
				t.Fatal("a refused seed returned an identity")
			}
			if !errors.Is(err, ErrNotUserSeed) && !strings.HasPrefix(err.Error(), "parse identity seed: ") &&
				!strings.HasPrefix(err.Error(), "identity seed must be ") {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		checkSeed(t, s, id)
	})
}

func mustSeed(tb testing.TB, create func() (nkeys.KeyPair, error)) []byte {
	tb.Helper()
	kp, err := create()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := kp.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// FuzzLoad: an identity file (mode 0600) with arbitrary content loads
// exactly when its trimmed content is a seed ParseSeed accepts, as the
// same identity; an error never repeats a seed-like content (the file is
// a secret).
func FuzzLoad(f *testing.F) {
	for _, v := range identityVectors(f) {
		f.Add([]byte(v.NKeySeed + "\n"))
		f.Add([]byte("  " + v.NKeySeed + "\r\n\n"))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte("A"), MaxFileSize+1))
	path := filepath.Join(f.TempDir(), "id")
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		id, err := Load(path)
		trimmed := bytes.TrimSpace(content)
		want, werr := ParseSeed(trimmed)
		if len(content) > MaxFileSize {
			want, werr = nil, errors.New("too large")
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("Load: %v, ParseSeed of the trimmed content: %v", err, werr)
		}
		if err != nil {
			if bytes.HasPrefix(trimmed, []byte("S")) && len(trimmed) >= 16 && strings.Contains(err.Error(), string(trimmed)) {
				t.Fatalf("the error repeats the file's content: %v", err)
			}
			return
		}
		if id.SignPub() != want.SignPub() {
			t.Fatal("Load and ParseSeed disagree on the identity")
		}
		checkSeed(t, trimmed, id)
	})
}

// FuzzSignPub: the two text forms of a user id. ParseSignPub accepts only
// the canonical 64-lowercase-hex form (String gives it back exactly);
// SignPubFromNKey accepts only the canonical user public nkey (NKey gives
// it back exactly), though nkeys also takes spellings with CR or LF in
// them; each form converts to the other.
func FuzzSignPub(f *testing.F) {
	for _, v := range identityVectors(f) {
		f.Add(v.SignPub)
		f.Add(v.NKey)
		f.Add(strings.ToUpper(v.SignPub))
	}
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParseSignPub(s); err != nil {
			if !errors.Is(err, ErrBadSignPub) {
				t.Fatalf("ParseSignPub: undocumented error %v", err)
			}
		} else {
			if p.String() != s {
				t.Fatalf("ParseSignPub accepted %q, which is not the canonical %q", s, p.String())
			}
			if q, err := SignPubFromNKey(p.NKey()); err != nil || q != p {
				t.Fatalf("the nkey form of %s does not convert back: %v", s, err)
			}
		}
		p, err := SignPubFromNKey(s)
		if err != nil {
			// nkeys accepts other spellings (base32 decoding skips CR
			// and LF, and tolerates some trailing characters); the
			// canonical one, its own encoding of the key, must not be
			// refused.
			if nkeys.IsValidPublicUserKey(s) && canonicalUserNKey(s) == s {
				t.Fatalf("SignPubFromNKey refused %q, a valid user nkey in canonical form: %v", s, err)
			}
			return
		}
		if !nkeys.IsValidPublicUserKey(s) {
			t.Fatalf("SignPubFromNKey accepted %q, which nkeys refuses", s)
		}
		if p.NKey() != s {
			t.Fatalf("SignPubFromNKey accepted %q, which is not the canonical %q", s, p.NKey())
		}
		if q, err := ParseSignPub(p.String()); err != nil || q != p {
			t.Fatalf("the hex form of %s does not convert back: %v", s, err)
		}
	})
}

// FuzzKEMPub: a published KEM key and its binding signature, as the
// server and clients receive them. ParseKEMPub accepts only a valid
// 1216-byte key, kept byte for byte; the binding verifies only for a
// vector identity's own key and signature.
func FuzzKEMPub(f *testing.F) {
	vs := identityVectors(f)
	for _, v := range vs {
		f.Add(uint8(0), unhex(f, v.KEMPub), unhex(f, v.KEMBinding))
	}
	f.Add(uint8(1), unhex(f, vs[0].KEMPub), unhex(f, vs[0].KEMBinding))
	f.Add(uint8(0), unhex(f, vs[0].KEMPub)[:KEMPubSize-1], unhex(f, vs[0].KEMBinding))
	f.Add(uint8(0), bytes.Repeat([]byte{0xff}, KEMPubSize), []byte{})
	f.Fuzz(func(t *testing.T, who uint8, kem, sig []byte) {
		k, err := ParseKEMPub(kem)
		if err != nil {
			if !errors.Is(err, ErrBadKEMPub) || !k.IsZero() {
				t.Fatalf("refused with %v and key zero=%v", err, k.IsZero())
			}
			return
		}
		if k.IsZero() || !bytes.Equal(k.Bytes(), kem) || !bytes.Equal(k.HPKE().Bytes(), kem) {
			t.Fatal("an accepted KEM key is not kept byte for byte")
		}
		v := vs[int(who)%len(vs)]
		sp, err := ParseSignPub(v.SignPub)
		if err != nil {
			t.Fatal(err)
		}
		err = VerifyKEMBinding(sp, k, sig)
		if err != nil {
			if !errors.Is(err, ErrBadKEMBinding) {
				t.Fatalf("VerifyKEMBinding: undocumented error %v", err)
			}
			return
		}
		if !bytes.Equal(kem, unhex(t, v.KEMPub)) || !bytes.Equal(sig, unhex(t, v.KEMBinding)) {
			t.Fatalf("a binding verified for a key or signature that is not %s's", v.SignPub)
		}
	})
}

// canonicalUserNKey is nkeys' own encoding of the user key s decodes to
// ("" if it does not decode).
func canonicalUserNKey(s string) string {
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(s))
	if err != nil {
		return ""
	}
	enc, err := nkeys.Encode(nkeys.PrefixByteUser, raw)
	if err != nil {
		return ""
	}
	return string(enc)
}

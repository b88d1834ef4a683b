// Package extnats runs membershipd's side of an external NATS deployment
// (nats-server ≥ 2.10 that the operator runs, configured from
// ServerConfig): the auth callout service that admits members with the
// data plane's permissions (callout.go), the system-account client that
// closes a revoked user's live connections on every server (kick.go), the
// checks at start that refuse an unsafe or incomplete nats-server
// configuration with a message naming what to add (checks.go), and the
// Engine that ties them together for the daemon (engine.go).
//
// It is not the embedded engine (internal/natsnode) and it configures
// nothing on the server: the server's accounts, users and auth callout
// come from the operator's configuration file.
package extnats

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/identity"
)

// Keys are everything membershipd needs to run in front of an external
// NATS, all derived from one account seed (the credentials file), so that
// every membershipd in front of the same NATS, given the same file, signs
// with the same issuer and logs in with the same users:
//
//   - Issuer signs the callout's responses and the user JWTs; its public
//     key is authorization.auth_callout.issuer;
//   - CalloutUser logs in to CalloutAccount and serves the callout; it is
//     one of auth_callout.auth_users;
//   - SystemUser logs in to the system account, to list and close
//     connections (kick.go); also one of auth_callout.auth_users;
//   - XKey decrypts the server's requests and encrypts the responses when
//     auth_callout.xkey names its public key;
//   - Internal is membershipd's internal identity, which the callout
//     admits into the bus, control and members accounts;
//   - Probe is the user of the check at start (checks.go), which every
//     callout admits with no permissions: the membershipds in front of
//     one NATS share the callout's queue group, so another's callout may
//     answer the check's login.
//
// The derivations (HKDF-SHA256 of the seed's 32 raw bytes, one label
// each) are fixed: changing a label changes the keys a deployed
// nats-server configuration names.
type Keys struct {
	Issuer      nkeys.KeyPair
	CalloutUser nkeys.KeyPair
	SystemUser  nkeys.KeyPair
	XKey        nkeys.KeyPair
	Internal    *identity.Identity
	Probe       nkeys.KeyPair
}

// Derivation labels of Keys.
const (
	labelCalloutUser = "unibus/external-nats/v1/callout-user"
	labelSystemUser  = "unibus/external-nats/v1/system-user"
	labelXKey        = "unibus/external-nats/v1/xkey"
	labelInternal    = "unibus/external-nats/v1/internal"
	labelProbe       = "unibus/external-nats/v1/probe"
)

// ErrCredsMode is returned by LoadKeys for a credentials file that others
// may read.
var ErrCredsMode = errors.New("credentials file is readable by others")

// LoadKeys reads the credentials file (an account seed, "SA…", on a line
// of its own; lines starting with # are comments) and derives the keys.
// The file must not be readable by group or others.
func LoadKeys(path string) (*Keys, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("nats credentials %s: %w (mode %v): chmod 600 it", path, ErrCredsMode, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	seed := findSeed(raw)
	if seed == nil {
		return nil, fmt.Errorf("nats credentials %s: no account seed (a line starting with SA); make one with 'membershipd external-nats init'", path)
	}
	return KeysFromSeed(seed)
}

func findSeed(raw []byte) []byte {
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "SA") {
			return []byte(line)
		}
	}
	return nil
}

// KeysFromSeed derives the keys of an account seed ("SA…").
func KeysFromSeed(seed []byte) (*Keys, error) {
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil || prefix != nkeys.PrefixByteAccount {
		return nil, errors.New("nats credentials: the seed is not an account seed (SA…)")
	}
	k := &Keys{}
	if k.Issuer, err = nkeys.FromSeed(seed); err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	derive := func(label string) []byte {
		b, err := hkdf.Key(sha256.New, raw, nil, label, 32)
		if err != nil {
			panic(err) // 32 bytes of SHA-256 HKDF cannot fail
		}
		return b
	}
	if k.CalloutUser, err = nkeys.FromRawSeed(nkeys.PrefixByteUser, derive(labelCalloutUser)); err != nil {
		return nil, err
	}
	if k.SystemUser, err = nkeys.FromRawSeed(nkeys.PrefixByteUser, derive(labelSystemUser)); err != nil {
		return nil, err
	}
	xs, err := nkeys.EncodeSeed(nkeys.PrefixByteCurve, derive(labelXKey))
	if err != nil {
		return nil, err
	}
	if k.XKey, err = nkeys.FromCurveSeed(xs); err != nil {
		return nil, err
	}
	if k.Internal, err = identity.FromSeed(derive(labelInternal)); err != nil {
		return nil, err
	}
	if k.Probe, err = nkeys.FromRawSeed(nkeys.PrefixByteUser, derive(labelProbe)); err != nil {
		return nil, err
	}
	return k, nil
}

// Public are the public keys a nats-server configuration names.
type Public struct {
	Issuer, CalloutUser, SystemUser, XKey, Internal string
}

// Public returns the keys' public halves.
func (k *Keys) Public() Public {
	var p Public
	p.Issuer, _ = k.Issuer.PublicKey()
	p.CalloutUser, _ = k.CalloutUser.PublicKey()
	p.SystemUser, _ = k.SystemUser.PublicKey()
	p.XKey, _ = k.XKey.PublicKey()
	p.Internal = k.Internal.NKey()
	return p
}

// WriteNewCreds creates path (mode 0600, never overwriting) with a new
// random account seed and returns its keys.
func WriteNewCreds(path string) (*Keys, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	k, err := KeysFromSeed(seed)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s exists: not overwritten (it may be the deployment's credentials)", path)
	}
	if err != nil {
		return nil, err
	}
	body := "# unibus external-NATS credentials: the auth callout issuer's account seed.\n" +
		"# Every membershipd in front of the same NATS uses this file. Keep it secret (0600).\n" +
		string(seed) + "\n"
	if _, err := f.WriteString(body); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

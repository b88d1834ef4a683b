package client

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/unibus/unibus/identity"
)

// Key pinning (trust on first use).
//
// The server is trusted for membership but not for keys: a server that
// answered "bob" with another identity, or bob's sign-pub with a KEM key
// that is not bob's, would receive the room keys the client seals. So the
// client remembers, the first time it sees them, the sign-pub of every
// handle and the KEM key of every sign-pub, and from then on refuses to
// seal to anything else (KeyChangedError). A legitimate change is accepted
// explicitly, after comparing fingerprints out of band: `unibus whois
// USER` shows the fingerprint, `unibus whois USER --accept` re-pins.
//
// The known-keys file (Config.KnownKeysFile; the CLI's default is
// "<identity file>.known_keys" beside the identity file) is text, mode
// 0600, one record per line, fields separated by single spaces:
//
//	# unibus known keys v1
//	handle <handle> <sign-pub: 64 lowercase hex>
//	kem <sign-pub: 64 lowercase hex> <SHA-256 of the 1216-byte KEM public key: 64 lowercase hex>
//
// The first line is the header above, exactly. Blank lines and lines
// starting with "#" are comments. Any other line is an error: the file is
// refused, never half read. When a name has several records (two processes
// pinned it at once), the first one counts. New pins are appended;
// accepting a change rewrites the file (temporary file, fsync, rename).
// Like an identity file, a known-keys file that group or others can access
// is refused (chmod 600).

// knownKeysHeader is the first line of a known-keys file.
const knownKeysHeader = "# unibus known keys v1"

// maxKnownKeysFileSize bounds what the client reads of a known-keys file
// (about 40 000 users).
const maxKnownKeysFileSize = 8 << 20

// DefaultKnownKeysFile is the known-keys file the CLI uses for an identity
// file: beside it, named "<identity file>.known_keys".
func DefaultKnownKeysFile(identityFile string) string { return identityFile + ".known_keys" }

// ErrKeyChanged is matched (errors.Is) by every KeyChangedError.
var ErrKeyChanged = errors.New("a user's key differs from the pinned one")

// KeyChangedError reports that the server gave, for a user the client has
// seen before, a key different from the pinned one. The client refuses to
// seal a room key to it.
type KeyChangedError struct {
	// User names the user as the error's reader knows it: the handle, or
	// the sign-pub when there is no handle.
	User string
	// Key is what changed: "sign-pub" (the handle now names another
	// identity) or "KEM key" (the sign-pub now has another KEM key).
	Key string
	// Pinned and Got are the pinned and the offered values: sign-pubs, or
	// SHA-256 digests of KEM keys, in hex.
	Pinned, Got string
	// File is the known-keys file ("" when pins are kept in memory).
	File string
}

func (e *KeyChangedError) Error() string {
	where := "pinned"
	if e.File != "" {
		where = "pinned in " + e.File
	}
	return fmt.Sprintf("the %s of user %q changed (%s: %s…, the server now gives %s…); refusing to use it. "+
		"If %s really has a new key, compare fingerprints with them out of band (unibus whois %s) and accept it with: unibus whois %s --accept",
		e.Key, e.User, where, short(e.Pinned), short(e.Got), e.User, e.User, e.User)
}

// Is makes errors.Is(err, ErrKeyChanged) true.
func (e *KeyChangedError) Is(target error) bool { return target == ErrKeyChanged }

func short(hexs string) string {
	if len(hexs) > 16 {
		return hexs[:16]
	}
	return hexs
}

// kemDigest is the pinned form of a KEM key: the hex SHA-256 of its bytes.
func kemDigest(k identity.KEMPub) string {
	sum := sha256.Sum256(k.Bytes())
	return hex.EncodeToString(sum[:])
}

// fingerprintLabel prefixes what Fingerprint hashes.
const fingerprintLabel = "unibus/v1/fingerprint"

// Fingerprint is what two people compare out of band to know they hold
// the same keys for a user: SHA-256 of "unibus/v1/fingerprint" || 0x00 ||
// sign-pub (32 bytes) || KEM public key (1216 bytes), as 16 groups of 4
// hex digits.
func Fingerprint(signPub identity.SignPub, kem identity.KEMPub) string {
	h := sha256.New()
	h.Write([]byte(fingerprintLabel))
	h.Write([]byte{0})
	h.Write(signPub[:])
	h.Write(kem.Bytes())
	x := hex.EncodeToString(h.Sum(nil))
	var b strings.Builder
	for i := 0; i < len(x); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x[i : i+4])
	}
	return b.String()
}

// knownKeys is the client's pins: in memory, and in a file when path is set.
// The file is read again before every decision, so several processes
// sharing it see each other's pins.
type knownKeys struct {
	path string

	mu      sync.Mutex
	handles map[string]string   // handle → sign-pub (hex)
	kems    map[string]string   // sign-pub (hex) → kemDigest
	warned  map[string]struct{} // changes already logged
}

// firstWarning reports whether the warning s is new (and notes it).
func (k *knownKeys) firstWarning(s string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.warned[s]; ok {
		return false
	}
	k.warned[s] = struct{}{}
	return true
}

func newKnownKeys(path string) (*knownKeys, error) {
	k := &knownKeys{path: path, handles: map[string]string{}, kems: map[string]string{}, warned: map[string]struct{}{}}
	if err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// pin is one user's keys as offered by the server; an empty field is not
// checked.
type pin struct {
	handle, signPub, kem string // kem is a kemDigest
}

// check compares p with the pins: a mismatch is a KeyChangedError; what is
// not pinned yet is pinned (and written). It reports whether anything was
// new.
func (k *knownKeys) check(p pin) (bool, error) {
	news, errs, err := k.checkAll([]pin{p})
	if err != nil {
		return false, err
	}
	return news[0], errs[0]
}

// checkAll checks several pins with one read of the file and one append:
// errs[i] is pins[i]'s KeyChangedError, news[i] whether it added anything.
// err is a failure to read or write the file.
func (k *knownKeys) checkAll(pins []pin) (news []bool, errs []error, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(); err != nil {
		return nil, nil, err
	}
	news, errs = make([]bool, len(pins)), make([]error, len(pins))
	var add []string
	for i, p := range pins {
		lines, err := k.compare(p)
		if err != nil {
			errs[i] = err
			continue
		}
		news[i] = len(lines) > 0
		add = append(add, lines...)
		if p.handle != "" && p.signPub != "" {
			if _, ok := k.handles[p.handle]; !ok {
				k.handles[p.handle] = p.signPub
			}
		}
		if p.signPub != "" && p.kem != "" {
			if _, ok := k.kems[p.signPub]; !ok {
				k.kems[p.signPub] = p.kem
			}
		}
	}
	if len(add) > 0 {
		if err := k.appendLines(add); err != nil {
			k.load() // forget what was not written
			return nil, nil, err
		}
	}
	return news, errs, nil
}

// known reports, without reading the file, whether every pin matches the
// pins in memory exactly (nothing new, nothing changed).
func (k *knownKeys) known(pins []pin) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range pins {
		if lines, err := k.compare(p); err != nil || len(lines) > 0 {
			return false
		}
	}
	return true
}

// compare returns the records that p would add, or the change it makes.
// k.mu is held.
func (k *knownKeys) compare(p pin) ([]string, error) {
	user := p.handle
	if user == "" {
		user = p.signPub
	}
	var add []string
	if p.handle != "" && p.signPub != "" {
		switch old, ok := k.handles[p.handle]; {
		case !ok:
			add = append(add, "handle "+p.handle+" "+p.signPub)
		case old != p.signPub:
			return nil, &KeyChangedError{User: user, Key: "sign-pub", Pinned: old, Got: p.signPub, File: k.path}
		}
	}
	if p.signPub != "" && p.kem != "" {
		switch old, ok := k.kems[p.signPub]; {
		case !ok:
			add = append(add, "kem "+p.signPub+" "+p.kem)
		case old != p.kem:
			return nil, &KeyChangedError{User: user, Key: "KEM key", Pinned: old, Got: p.kem, File: k.path}
		}
	}
	return add, nil
}

// replace pins p, dropping whatever was pinned for its handle and sign-pub.
func (k *knownKeys) replace(p pin) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(); err != nil {
		return err
	}
	if p.handle != "" && p.signPub != "" {
		k.handles[p.handle] = p.signPub
	}
	if p.signPub != "" && p.kem != "" {
		k.kems[p.signPub] = p.kem
	}
	return k.rewrite()
}

// load reads the file into the maps (replacing them). A missing file is an
// empty one.
func (k *knownKeys) load() error {
	if k.path == "" {
		return nil
	}
	f, err := os.Open(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open known-keys file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat known-keys file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("known-keys file %s is not a regular file", k.path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("known-keys file %s has mode %04o: others could change whom you trust; run: chmod 600 %s", k.path, perm, k.path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKnownKeysFileSize+1))
	if err != nil {
		return fmt.Errorf("read known-keys file: %w", err)
	}
	if len(raw) > maxKnownKeysFileSize {
		return fmt.Errorf("known-keys file %s is larger than %d bytes", k.path, maxKnownKeysFileSize)
	}
	handles, kems, err := parseKnownKeys(raw)
	if err != nil {
		return fmt.Errorf("known-keys file %s: %w", k.path, err)
	}
	k.handles, k.kems = handles, kems
	return nil
}

// parseKnownKeys parses the file format described above.
func parseKnownKeys(raw []byte) (handles, kems map[string]string, err error) {
	handles, kems = map[string]string{}, map[string]string{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return handles, kems, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 4096), 4096)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if n == 1 {
			if line != knownKeysHeader {
				return nil, nil, fmt.Errorf("line 1 is not %q: not a unibus known-keys file", knownKeysHeader)
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, " ")
		if len(f) != 3 {
			return nil, nil, fmt.Errorf("line %d: want 3 fields separated by single spaces", n)
		}
		switch f[0] {
		case "handle":
			if !validHandle(f[1]) {
				return nil, nil, fmt.Errorf("line %d: %q is not a handle", n, f[1])
			}
			if _, err := identity.ParseSignPub(f[2]); err != nil {
				return nil, nil, fmt.Errorf("line %d: %w", n, err)
			}
			if _, ok := handles[f[1]]; !ok {
				handles[f[1]] = f[2]
			}
		case "kem":
			if _, err := identity.ParseSignPub(f[1]); err != nil {
				return nil, nil, fmt.Errorf("line %d: %w", n, err)
			}
			if !isHex64(f[2]) {
				return nil, nil, fmt.Errorf("line %d: the KEM key digest must be 64 lowercase hex characters", n)
			}
			if _, ok := kems[f[1]]; !ok {
				kems[f[1]] = f[2]
			}
		default:
			return nil, nil, fmt.Errorf("line %d: unknown record %q (want handle or kem)", n, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return handles, kems, nil
}

// appendLines appends records, creating the file (0600, with its header)
// when it does not exist yet. One write call, so that concurrent appenders
// do not interleave within a line.
func (k *knownKeys) appendLines(lines []string) error {
	if k.path == "" {
		return nil
	}
	f, err := os.OpenFile(k.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record known keys (set another file with --known-keys): %w", err)
	}
	var b strings.Builder
	if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
		b.WriteString(knownKeysHeader + "\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	_, werr := f.WriteString(b.String())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("record known keys in %s: %w", k.path, err)
	}
	return nil
}

// rewrite writes the whole file from the maps: a temporary file beside
// it, fsync, rename.
func (k *knownKeys) rewrite() error {
	if k.path == "" {
		return nil
	}
	var b strings.Builder
	b.WriteString(knownKeysHeader + "\n")
	for _, h := range slices.Sorted(maps.Keys(k.handles)) {
		b.WriteString("handle " + h + " " + k.handles[h] + "\n")
	}
	for _, s := range slices.Sorted(maps.Keys(k.kems)) {
		b.WriteString("kem " + s + " " + k.kems[s] + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), filepath.Base(k.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("rewrite known-keys file: %w", err)
	}
	_, werr := tmp.WriteString(b.String())
	cherr := tmp.Chmod(0o600)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, cherr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("rewrite known-keys file: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("rewrite known-keys file: %w", err)
	}
	return nil
}

// validHandle is the handle syntax: [a-z0-9][a-z0-9._-]{0,62}.
func validHandle(h string) bool {
	if h == "" || len(h) > 63 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '.' || c == '_' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrInsecureFile is returned when an identity file can be read by group or others.
var ErrInsecureFile = errors.New("identity file is accessible by group or others")

// MaxFileSize bounds what Load reads: a seed string is 58 bytes.
const MaxFileSize = 4096

// Load reads an identity file. Like ssh, it refuses a file that group or
// others may read or write: fix it with chmod 600.
func Load(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open identity file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat identity file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrInsecureFile, path, perm, path)
	}
	buf := make([]byte, MaxFileSize+1)
	n, err := f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read identity file %s: %w", path, err)
	}
	if n > MaxFileSize {
		return nil, fmt.Errorf("identity file %s is larger than %d bytes: not an identity", path, MaxFileSize)
	}
	id, err := ParseSeed(bytes.TrimSpace(buf[:n]))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return id, nil
}

// Save writes the identity to a new file with mode 0600, creating missing
// parent directories with mode 0700. It never overwrites: an existing path
// is an error wrapping fs.ErrExist.
func (id *Identity) Save(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create identity directory: %w", err)
		}
	}
	seed, err := id.seedString()
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("identity file %s already exists; refusing to overwrite it: %w", path, err)
		}
		return fmt.Errorf("create identity file: %w", err)
	}
	_, werr := f.Write(append(seed, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("write identity file: %w", err)
	}
	return nil
}

//go:build !unix

package daemon

import "errors"

// freeBytes cannot be read on this platform: the disk reserve is not
// enforced there.
func freeBytes(string) (int64, error) {
	return 0, errors.New("free space not available on this platform")
}

// totalBytes cannot be read on this platform: byte quotas need a value.
func totalBytes(string) (int64, error) {
	return 0, errors.New("file system size not available on this platform")
}

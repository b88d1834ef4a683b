package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// FuzzValidID: a blob id in a request path is accepted only as the
// lowercase hex form of a SHA-256 sum, which is the only form the stores
// name files and objects by.
func FuzzValidID(f *testing.F) {
	sum := sha256.Sum256([]byte("blob"))
	id := hex.EncodeToString(sum[:])
	f.Add(id)
	f.Add(id[:63] + "F")
	f.Add("../" + id[3:])
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidID(s) {
			return
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != s {
			t.Fatalf("accepted %q, which is not a lowercase hex SHA-256 sum", s)
		}
	})
}

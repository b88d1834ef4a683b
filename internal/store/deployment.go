package store

import (
	"crypto/rand"
	"encoding/hex"
)

// DeploymentIDLen is the length of a deployment id in characters.
const DeploymentIDLen = 32

// NewDeploymentID returns a new random deployment id: 128 bits from
// crypto/rand in 32 lowercase hex characters. A store makes one the first
// time Store.DeploymentID is called and keeps it forever.
func NewDeploymentID() string {
	var b [DeploymentIDLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidDeploymentID reports whether s has the form of a deployment id:
// DeploymentIDLen lowercase hex characters. A store refuses a stored id
// that does not, as a corrupt record.
func ValidDeploymentID(s string) bool {
	if len(s) != DeploymentIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

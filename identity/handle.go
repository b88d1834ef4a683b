package identity

import "regexp"

// MaxHandleLen is the longest handle, in bytes.
const MaxHandleLen = 63

// handleRE is the handle syntax (docs/DESIGN.md): lowercase, so that two
// handles never differ only by case; a leading letter or digit, so that a
// handle is never mistaken for a flag or a path; at most MaxHandleLen
// characters.
var handleRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidHandle reports whether h is a valid handle: [a-z0-9][a-z0-9._-]{0,62}.
func ValidHandle(h string) bool { return handleRE.MatchString(h) }

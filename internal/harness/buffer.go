package harness

import (
	"strings"
	"sync"
)

// LockedBuffer collects output that one goroutine writes while another
// reads it (a process's log, an SDK's logger), so that the race detector
// has nothing to report. Its zero value is ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

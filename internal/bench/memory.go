package bench

import (
	"os"
	"strconv"
	"strings"
)

// MemoryResult is one reading of a membershipd process's resident memory.
type MemoryResult struct {
	// What is MemIdle (started with the defaults, before any load, once
	// settled) or MemPeak (its high-water mark over the scenarios it
	// carried, VmHWM).
	What   string `json:"what"`
	Store  string `json:"store"`
	JSSync string `json:"js_sync"`
	KiB    int64  `json:"kib"`
}

// Memory readings.
const (
	MemIdle = "idle RSS"
	MemPeak = "peak RSS (VmHWM)"
)

// procStatusKiB reads a "kB" field of /proc/<pid>/status (VmRSS, VmHWM);
// 0 elsewhere or on error.
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

package bench

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0..100) of ds in milliseconds, or
// 0 for no samples. ds is sorted in place.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds)-1) * p / 100)
	return float64(ds[i]) / float64(time.Millisecond)
}

// usage is a snapshot of the CPU time of this process and of the server
// process, and of this process's heap allocation count.
type usage struct {
	at      time.Time
	self    time.Duration
	server  time.Duration
	mallocs uint64
	pid     int
}

// snapshot reads the current usage; pid is the server's process (0: none).
func snapshot(pid int) usage {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u := usage{at: time.Now(), mallocs: ms.Mallocs, pid: pid, self: selfCPU()}
	if pid > 0 {
		u.server = procCPU(pid)
	}
	return u
}

// since returns, per unit of work n, this process's CPU µs, the server's
// CPU µs (0 when unknown) and this process's heap allocations.
func (u usage) since(n int) (selfUS, serverUS, allocs float64) {
	if n <= 0 {
		return 0, 0, 0
	}
	now := snapshot(u.pid)
	selfUS = float64(now.self-u.self) / float64(time.Microsecond) / float64(n)
	if u.pid > 0 && now.server > 0 {
		serverUS = float64(now.server-u.server) / float64(time.Microsecond) / float64(n)
	}
	allocs = float64(now.mallocs-u.mallocs) / float64(n)
	return
}

// procCPU reads a process's user+system CPU time from /proc (Linux); 0
// elsewhere or on error.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const clkTck = 100 // USER_HZ on every Linux architecture Go supports
	return time.Duration(ut+st) * time.Second / clkTck
}

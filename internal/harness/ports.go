package harness

import (
	"fmt"
	"net"
)

// defaultPorts are membershipd's default HTTP, NATS and route ports; a
// test never uses them, so that it cannot meet a bus running on the
// machine.
var defaultPorts = map[int]bool{8470: true, 4250: true, 6250: true}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t TB) int {
	t.Helper()
	return FreePorts(t, []string{"127.0.0.1"}, 1)[0]
}

// FreePorts returns n distinct TCP ports, each free a moment ago on every
// address in ips, never membershipd's defaults.
func FreePorts(t TB, ips []string, n int) []int {
	t.Helper()
	var ports []int
	taken := map[int]bool{}
	for attempt := 0; len(ports) < n && attempt < 100+n; attempt++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ips[0], err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{ln}
		ok := !defaultPorts[p] && !taken[p]
		for _, ip := range ips[1:] {
			if !ok {
				break
			}
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(p)))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, l)
		}
		for _, l := range lns {
			l.Close()
		}
		if ok {
			ports, taken[p] = append(ports, p), true
		}
	}
	if len(ports) < n {
		t.Fatalf("no %d ports free on all of %v", n, ips)
	}
	return ports
}

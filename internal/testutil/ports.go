package testutil

import (
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort returns a loopback TCP address that was free a moment ago.
//
// The port is below the kernel's ephemeral range: a port the kernel hands
// out for port 0 is also what it hands to outgoing connections, so between
// this call and lmntd's bind a test's client could take it ("address
// already in use", seen in the daemon's TestForwardedHeaderAttack).
func FreePort(t testing.TB) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+mrand.IntN(low-10000)))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatalf("no free TCP port on 127.0.0.1 below the ephemeral range (%d)", low)
	return ""
}

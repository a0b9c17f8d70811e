package api

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// machineRefresh is how long this machine's names and addresses are
// reused: DHCP and renames are rare, requests are not.
const machineRefresh = 10 * time.Second

// machineInfo is this machine's host names and interface addresses: the
// hosts a browser may name (DNS rebinding) and the addresses that are never
// a LAN client (every local user can connect from them).
type machineInfo struct {
	names map[string]bool
	addrs map[netip.Addr]bool
	// addrErr is why the addresses could not be listed: then no client is
	// trusted by address (it might be this machine).
	addrErr error
}

func (m machineInfo) hasName(host string) bool { return m.names[strings.ToLower(host)] }

func (m machineInfo) hasAddr(a netip.Addr) bool { return m.addrs[a.Unmap().WithZone("")] }

// readMachine reads the host name (with its mDNS .local form, the one
// MainsailOS and FluiddPi advertise) and every interface address.
func readMachine() machineInfo {
	m := machineInfo{names: map[string]bool{}, addrs: map[netip.Addr]bool{}}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		short, _, _ := strings.Cut(h, ".")
		for _, n := range []string{h, short, short + ".local"} {
			m.names[n] = true
		}
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		m.addrErr = err
		return m
	}
	for _, ia := range ifaddrs {
		if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
			m.addrs[pfx.Addr().Unmap().WithZone("")] = true
		}
	}
	return m
}

// machineCache rereads the machine's names and addresses at most every ttl.
type machineCache struct {
	ttl  time.Duration
	mu   sync.Mutex
	at   time.Time
	info machineInfo
}

func newMachineCache(ttl time.Duration) *machineCache { return &machineCache{ttl: ttl} }

func (c *machineCache) get() machineInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.info.names == nil || time.Since(c.at) > c.ttl {
		c.info, c.at = readMachine(), time.Now()
	}
	return c.info
}

package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// testMachine is a printer named "voron" with one LAN address.
func testMachine() machineInfo {
	return machineInfo{
		names: map[string]bool{"voron": true, "voron.local": true},
		addrs: map[netip.Addr]bool{netip.MustParseAddr("192.168.1.10"): true, netip.MustParseAddr("127.0.0.1"): true},
	}
}

func testAccess() *Access {
	a := &Access{
		TrustedClients: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")} },
		APIKey:         func() []byte { return []byte("the-key") },
		AllowedHosts:   func() []string { return []string{"printer.example.com"} },
		machine:        testMachine,
	}
	a.init()
	return a
}

func withTestPeer(r *http.Request, p *peer) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), peerKey{}, p))
}

func tcpRequest(peerAddr string, header map[string]string) *http.Request {
	r := httptest.NewRequest("GET", "http://voron.local/lmnt/v1/status", nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	return withTestPeer(r, &peer{addr: netip.MustParseAddrPort(peerAddr)})
}

// TestTCPAccessRules: on TCP the connecting address alone decides.
// Forwarded headers never count there (any local user can connect from
// loopback and write them), and this machine's own addresses are never a
// trusted LAN client.
func TestTCPAccessRules(t *testing.T) {
	a := testAccess()
	for _, c := range []struct {
		name   string
		peer   string
		header map[string]string
		allow  bool
	}{
		{"trusted LAN client", "192.168.1.50:40000", nil, true},
		{"untrusted LAN client", "10.0.0.5:40000", nil, false},
		{"untrusted client forging X-Forwarded-For", "10.0.0.5:40000", map[string]string{"X-Forwarded-For": "192.168.1.50"}, false},
		{"trusted client's X-Forwarded-For is ignored", "192.168.1.50:40000", map[string]string{"X-Forwarded-For": "10.9.9.9"}, true},
		{"local user on loopback forging X-Forwarded-For", "127.0.0.1:50000", map[string]string{"X-Forwarded-For": "192.168.1.7"}, false},
		{"local user on IPv6 loopback forging X-Forwarded-For", "[::1]:50000", map[string]string{"X-Forwarded-For": "192.168.1.9"}, false},
		{"local user on loopback, Forwarded header", "127.0.0.1:50000", map[string]string{"Forwarded": "for=192.168.1.9", "X-Real-Ip": "192.168.1.9"}, false},
		{"local user through the machine's LAN address", "192.168.1.10:50000", nil, false},
		{"loopback without headers", "127.0.0.1:50000", nil, false},
		{"local user with the key", "127.0.0.1:50000", map[string]string{"X-Api-Key": "the-key"}, true},
		{"untrusted client with the key", "10.0.0.5:40000", map[string]string{"X-Api-Key": "the-key"}, true},
		{"untrusted client with a wrong key", "10.0.0.5:40000", map[string]string{"X-Api-Key": "the-kez"}, false},
		{"trusted client with a wrong key", "192.168.1.50:40000", map[string]string{"X-Api-Key": "nope"}, false},
	} {
		err := a.check(tcpRequest(c.peer, c.header))
		if (err == nil) != c.allow {
			t.Errorf("%s: allowed=%v (err %v), want %v", c.name, err == nil, err, c.allow)
		}
		if err != nil && strings.Contains(err.Error(), "the-key") {
			t.Errorf("%s: the refusal quotes the key", c.name)
		}
	}
	// A trusted_clients list that (wrongly) holds loopback still admits no
	// local user: config validation refuses it too, this is the backstop.
	b := testAccess()
	b.TrustedClients = func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }
	if err := b.check(tcpRequest("127.0.0.1:1", nil)); err == nil {
		t.Error("loopback admitted through a 0.0.0.0/0 trusted_clients")
	}
	// No key configured: an empty or any key admits nobody.
	c := &Access{machine: testMachine}
	c.init()
	if err := c.check(tcpRequest("10.0.0.5:1", map[string]string{"X-Api-Key": "x"})); err == nil {
		t.Error("a key was accepted with no api_key_file")
	}
}

// TestProxyAccessRules: on the proxy socket only the web server is
// admitted, and the browser's address is the last X-Forwarded-For hop.
func TestProxyAccessRules(t *testing.T) {
	a := testAccess()
	a.hasProxyGroup, a.proxyGroupID = true, 33
	nginx := &peer{unix: true, proxy: true, uid: 33, gid: 33}
	stranger := &peer{unix: true, proxy: true, uid: 1000, gid: 1000, groups: []uint32{27}}
	for _, c := range []struct {
		name  string
		peer  *peer
		xff   []string
		allow bool
	}{
		{"nginx forwarding a trusted client", nginx, []string{"192.168.1.7"}, true},
		{"nginx forwarding a trusted IPv4-mapped client", nginx, []string{"::ffff:192.168.1.7"}, true},
		{"nginx forwarding an untrusted client", nginx, []string{"10.0.0.5"}, false},
		{"nginx appending to a forged chain", nginx, []string{"192.168.1.7, 10.0.0.5"}, false},
		{"nginx forwarding a local user on loopback", nginx, []string{"127.0.0.1"}, false},
		{"nginx forwarding a local user on the LAN address", nginx, []string{"192.168.1.10"}, false},
		{"nginx without X-Forwarded-For", nginx, nil, false},
		{"nginx with garbage", nginx, []string{"not-an-ip"}, false},
		{"another uid on the proxy socket", stranger, []string{"192.168.1.7"}, false},
		{"root on the proxy socket", &peer{unix: true, proxy: true}, []string{"192.168.1.7"}, true},
	} {
		r := httptest.NewRequest("GET", "http://voron.local/machine/lmnt_marketplace/status", nil)
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		err := a.check(withTestPeer(r, c.peer))
		if (err == nil) != c.allow {
			t.Errorf("%s: allowed=%v (err %v), want %v", c.name, err == nil, err, c.allow)
		}
	}
}

// TestHostAllowlist: a rebinding page names its own host; only this
// machine's names and addresses, localhost and api.allowed_hosts pass.
func TestHostAllowlist(t *testing.T) {
	a := testAccess()
	for host, ok := range map[string]bool{
		"voron.local":              true,
		"VORON.local.":             true,
		"voron:7130":               true,
		"localhost:7130":           true,
		"127.0.0.1:7130":           true,
		"[::1]:7130":               true,
		"192.168.1.10":             true,
		"printer.example.com":      true,
		"evil.example":             false,
		"evil.example:7130":        false,
		"192.168.1.99":             false,
		"voron.local.evil.example": false,
		"printer.example.com.evil": false,
	} {
		o, err := parseOrigin("http", host)
		if err == nil {
			err = a.checkHost(o)
		}
		if (err == nil) != ok {
			t.Errorf("Host %q: allowed=%v (%v), want %v", host, err == nil, err, ok)
		}
	}
}

// TestSameOrigin: the Origin must equal the request's scheme, host and
// port, not just mention its host.
func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		host   string
		header map[string]string
		ok     bool
	}{
		{"voron.local", nil, true},
		{"voron.local", map[string]string{"Origin": "http://voron.local"}, true},
		{"voron.local", map[string]string{"Origin": "http://VORON.local:80"}, true},
		{"voron.local:7130", map[string]string{"Origin": "http://voron.local:7130"}, true},
		{"voron.local:7130", map[string]string{"Origin": "http://voron.local"}, false},
		{"voron.local", map[string]string{"Origin": "https://voron.local"}, false},
		{"voron.local", map[string]string{"Origin": "http://voron.local:8080"}, false},
		{"voron.local", map[string]string{"Origin": "voron.local"}, false},
		{"voron.local", map[string]string{"Origin": "http://voron.local@evil.example"}, false},
		{"voron.local", map[string]string{"Origin": "https://evil.example"}, false},
		{"voron.local", map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{"voron.local", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://voron.local"}, true},
	} {
		r := tcpRequest("192.168.1.5:1", c.header)
		r.Host = c.host
		own, err := requestOrigin(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameOrigin(r, own); (err == nil) != c.ok {
			t.Errorf("Host %s %v: ok=%v (%v), want %v", c.host, c.header, err == nil, err, c.ok)
		}
	}
	// Through the proxy, X-Forwarded-Proto says https; elsewhere it is ignored.
	r := httptest.NewRequest("GET", "http://voron.local/", nil)
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("Origin", "https://voron.local")
	if own, _ := requestOrigin(withTestPeer(r, &peer{unix: true, proxy: true})); sameOrigin(r, own) != nil {
		t.Error("https origin through the proxy refused")
	}
	if own, _ := requestOrigin(withTestPeer(r, &peer{addr: netip.MustParseAddrPort("192.168.1.5:1")})); sameOrigin(r, own) == nil {
		t.Error("X-Forwarded-Proto honoured on plain TCP")
	}
}

// TestUnknownAddressesFailClosed: when this machine's addresses cannot be
// listed (netlink refused), a local user could pass for a LAN client, so
// nobody is trusted by address; the key still works.
func TestUnknownAddressesFailClosed(t *testing.T) {
	a := testAccess()
	a.machine = func() machineInfo { return machineInfo{addrErr: errors.New("netlink: permission denied")} }
	if err := a.check(tcpRequest("192.168.1.50:1", nil)); err == nil || !strings.Contains(err.Error(), "cannot list") {
		t.Fatalf("trusted by address without knowing the machine's addresses: %v", err)
	}
	if err := a.check(tcpRequest("192.168.1.50:1", map[string]string{"X-Api-Key": "the-key"})); err != nil {
		t.Fatalf("key refused: %v", err)
	}
}

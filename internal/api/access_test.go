package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func tcpRequest(peerAddr string, header map[string]string) *http.Request {
	r := httptest.NewRequest("GET", "http://printer.local/lmnt/v1/status", nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	p := &peer{addr: netip.MustParseAddrPort(peerAddr)}
	return r.WithContext(context.WithValue(r.Context(), peerKey{}, p))
}

// TestTCPAccessRules covers the decisions the end-to-end test on loopback
// cannot reach: a LAN peer's X-Forwarded-For is ignored (it would let any
// client claim a trusted address), a loopback proxy's last hop counts.
func TestTCPAccessRules(t *testing.T) {
	a := &Access{
		TrustedClients: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")} },
		APIKey:         func() []byte { return []byte("the-key") },
	}
	a.init()
	for _, c := range []struct {
		name   string
		peer   string
		header map[string]string
		allow  bool
	}{
		{"trusted LAN client", "192.168.1.50:40000", nil, true},
		{"untrusted LAN client", "10.0.0.5:40000", nil, false},
		{"untrusted client forging X-Forwarded-For", "10.0.0.5:40000", map[string]string{"X-Forwarded-For": "192.168.1.50"}, false},
		{"trusted client's X-Forwarded-For is not needed but ignored", "192.168.1.50:40000", map[string]string{"X-Forwarded-For": "10.9.9.9"}, true},
		{"loopback proxy forwarding a trusted client", "127.0.0.1:50000", map[string]string{"X-Forwarded-For": "192.168.1.7"}, true},
		{"loopback proxy forwarding an untrusted client", "127.0.0.1:50000", map[string]string{"X-Forwarded-For": "10.0.0.5"}, false},
		{"loopback proxy, forged first hop", "127.0.0.1:50000", map[string]string{"X-Forwarded-For": "192.168.1.7, 10.0.0.5"}, false},
		{"loopback proxy, garbage hop", "127.0.0.1:50000", map[string]string{"X-Forwarded-For": "not-an-ip"}, false},
		{"IPv6 loopback proxy", "[::1]:50000", map[string]string{"X-Forwarded-For": "192.168.1.9"}, true},
		{"loopback without proxy header", "127.0.0.1:50000", nil, false},
		{"untrusted client with the key", "10.0.0.5:40000", map[string]string{"X-Api-Key": "the-key"}, true},
		{"untrusted client with a wrong key", "10.0.0.5:40000", map[string]string{"X-Api-Key": "the-kez"}, false},
		{"trusted client with a wrong key", "192.168.1.50:40000", map[string]string{"X-Api-Key": "nope"}, false},
	} {
		r := tcpRequest(c.peer, c.header)
		err := a.check(r)
		if (err == nil) != c.allow {
			t.Errorf("%s: allowed=%v (err %v), want %v", c.name, err == nil, err, c.allow)
		}
		if err != nil && strings.Contains(err.Error(), "the-key") {
			t.Errorf("%s: the refusal quotes the key", c.name)
		}
	}
	// No key configured: an empty or any key admits nobody.
	b := &Access{}
	b.init()
	if err := b.check(tcpRequest("10.0.0.5:1", map[string]string{"X-Api-Key": "x"})); err == nil {
		t.Error("a key was accepted with no api_key_file")
	}
}

func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		header map[string]string
		ok     bool
	}{
		{nil, true},
		{map[string]string{"Origin": "http://printer.local"}, true},
		{map[string]string{"Origin": "https://evil.example"}, false},
		{map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://printer.local"}, true},
	} {
		r := tcpRequest("192.168.1.5:1", c.header)
		if err := sameOrigin(r); (err == nil) != c.ok {
			t.Errorf("%v: ok=%v, want %v", c.header, err == nil, c.ok)
		}
	}
}

package marketplace

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"testing"
)

// Go forwards Authorization on redirects to subdomains; the client forwards
// it only to the exact marketplace origin.
func TestRedirectKeepsTokenOnOriginOnly(t *testing.T) {
	c, err := New(Options{BaseURL: "https://api.example", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for target, keep := range map[string]bool{
		"https://api.example/api/x":       true,
		"https://api.example:443/api/x":   true,
		"https://cdn.api.example/x":       false,
		"https://api.example:8443/x":      false,
		"https://storage.example/o?sig=1": false,
	} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Authorization", "Bearer t")
		if err := c.checkRedirect(req, []*http.Request{{}}); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if got := req.Header.Get("Authorization") != ""; got != keep {
			t.Errorf("%s: token kept = %v", target, got)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://evil.example/x", nil)
	if err := c.checkRedirect(req, []*http.Request{{}}); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("redirect to plain http: %v", err)
	}
	if err := c.checkRedirect(req, make([]*http.Request, 5)); err == nil {
		t.Fatal("sixth redirect followed")
	}
}

// The download dialer checks where a name resolves to: a DNS name that
// points at loopback is refused like a literal address (a hostile server
// can redirect to such a name), while the configured marketplace host is
// still reachable on loopback.
func TestDownloadDialerRefusesNamesResolvingInside(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := New(Options{BaseURL: "https://127.0.0.1:" + port, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("https://files.example/x")
	dial := c.downloadTransport(target).(*http.Transport).DialContext
	if _, err := dial(context.Background(), "tcp", "localhost:"+port); !errors.Is(err, ErrForbiddenTarget) {
		t.Fatalf("localhost:%s: %v, want ErrForbiddenTarget", port, err)
	}
	conn, err := dial(context.Background(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("the configured marketplace host on loopback: %v", err)
	}
	conn.Close()
}

func TestHostListed(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	hosts := []string{"api.lmnt.co", "printers.lmnt.co:8443", "[::1]:9000"}
	for raw, want := range map[string]bool{
		"https://api.lmnt.co/x":           true,
		"https://API.LMNT.CO:443/x":       true,
		"https://api.lmnt.co:8443/x":      false, // a bare host means the https port
		"https://printers.lmnt.co:8443/x": true,
		"https://printers.lmnt.co/x":      false,
		"https://evil.api.lmnt.co/x":      false, // no subdomains
		"https://[::1]:9000/x":            true,
		"https://storage.googleapis.com/": false,
	} {
		if got := hostListed(u(raw), hosts); got != want {
			t.Errorf("%s: %v, want %v", raw, got, want)
		}
	}
}

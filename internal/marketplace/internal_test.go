package marketplace

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://storage.example/b/o.enc?X-Goog-Signature=abc": "https://storage.example/b/o.enc?REDACTED",
		"https://user:pw@api.example/x":                        "https://api.example/x",
		"https://api.example/api/poll":                         "https://api.example/api/poll",
		"::bad?sig=1":                                          "::bad?REDACTED",
	} {
		if got := redactURLString(in); got != want {
			t.Errorf("%s ⇒ %s, want %s", in, got, want)
		}
	}
	err := redactErr(&url.Error{Op: "Get", URL: "https://s.example/o?sig=secret", Err: errors.New("boom")})
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the query: %v", err)
	}
}

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

func TestBackoffDoublesToCap(t *testing.T) {
	b := backoff{min: 5, max: 300}
	var got []int
	for i := 0; i < 8; i++ {
		got = append(got, int(b.next()))
	}
	want := []int{5, 10, 20, 40, 80, 160, 300, 300}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}

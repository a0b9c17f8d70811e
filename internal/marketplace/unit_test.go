package marketplace_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

func jwtWith(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256"}`)) + "." + enc(b) + ".c2ln"
}

func TestParseClaims(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name   string
		claims map[string]any
		id     string
		exp    time.Time
	}{
		{"printer_id", map[string]any{"printer_id": "p1", "printerId": "p2", "sub": "p3", "exp": exp.Unix()}, "p1", exp},
		{"printerId", map[string]any{"printerId": "p2", "sub": "p3", "exp": exp.Unix()}, "p2", exp},
		{"sub", map[string]any{"sub": "p3"}, "p3", time.Time{}},
		{"numeric id", map[string]any{"printer_id": 42, "exp": float64(exp.Unix())}, "42", exp},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := marketplace.ParseClaims(jwtWith(t, c.claims))
			if err != nil || got.PrinterID != c.id || !got.Expiry.Equal(c.exp) {
				t.Fatalf("%+v %v", got, err)
			}
		})
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c",
		jwtWith(t, map[string]any{"exp": "soon"})} {
		if _, err := marketplace.ParseClaims(bad); !errors.Is(err, marketplace.ErrBadToken) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestRefreshDecision(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, c := range []struct {
		name     string
		obtained time.Time
		expiry   time.Time
		refresh  bool
		again    time.Duration
	}{
		{"fresh 30-day token", now, now.Add(30 * day), false, 72 * time.Hour},
		{"under 10 days", now.Add(-21 * day), now.Add(9 * day), false, 24 * time.Hour},
		{"under 7 days", now.Add(-24 * day), now.Add(6 * day), true, 0},
		{"expired", now.Add(-31 * day), now.Add(-day), true, 0},
		{"over 80% of a 60-day lifetime", now.Add(-49 * day), now.Add(11 * day), true, 0},
		{"under 80% of a 60-day lifetime", now.Add(-47 * day), now.Add(13 * day), false, 72 * time.Hour},
		{"unknown start", time.Time{}, now.Add(20 * day), false, 72 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, again := marketplace.RefreshDecision(marketplace.Token{ObtainedAt: c.obtained, Expiry: c.expiry}, now)
			if r != c.refresh || again != c.again {
				t.Fatalf("refresh=%v again=%v, want %v %v", r, again, c.refresh, c.again)
			}
		})
	}
}

func TestTokenStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := marketplace.NewTokenStore(dir)
	if _, err := s.Load(); !errors.Is(err, marketplace.ErrNotPaired) {
		t.Fatalf("empty store: %v", err)
	}
	tok := marketplace.Token{Value: "a.b.c", PrinterID: "p1", Expiry: time.Unix(2_000_000_000, 0).UTC(), ObtainedAt: time.Unix(1_990_000_000, 0).UTC()}
	if err := s.Save(tok); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got != tok {
		t.Fatalf("%v %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
	fi, _ := os.Stat(filepath.Join(dir, marketplace.TokenFileName))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := os.WriteFile(filepath.Join(dir, marketplace.TokenFileName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil || errors.Is(err, marketplace.ErrNotPaired) {
		t.Fatalf("corrupt file: %v", err)
	}
}

func TestOptionsRefuseInsecureURLs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		o    marketplace.Options
		ok   bool
	}{
		{"https", marketplace.Options{BaseURL: "https://api.example"}, true},
		{"http loopback", marketplace.Options{BaseURL: "http://127.0.0.1:8080"}, true},
		{"http localhost", marketplace.Options{BaseURL: "http://localhost:8080"}, true},
		{"http remote", marketplace.Options{BaseURL: "http://api.example"}, false},
		{"http remote, development", marketplace.Options{BaseURL: "http://api.example", Development: true}, true},
		{"ftp", marketplace.Options{BaseURL: "ftp://api.example"}, false},
		{"query", marketplace.Options{BaseURL: "https://api.example/?key=1"}, false},
		{"push http remote", marketplace.Options{PushBaseURL: "http://rtdb.example"}, false},
		{"unknown profile", marketplace.Options{Profile: "v3"}, false},
		{"no state dir", marketplace.Options{StateDir: "-"}, false},
		{"missing CA file", marketplace.Options{ExtraCAFile: filepath.Join(dir, "nope.pem")}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			if o.StateDir == "-" {
				o.StateDir = ""
			} else {
				o.StateDir = dir
			}
			_, err := marketplace.New(o)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
			if !c.ok && c.name == "http remote" && !errors.Is(err, marketplace.ErrInsecureURL) {
				t.Fatalf("want ErrInsecureURL, got %v", err)
			}
		})
	}
}

func TestCallsNeedPairing(t *testing.T) {
	c, err := marketplace.New(marketplace.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Poll(t.Context()); !errors.Is(err, marketplace.ErrNotPaired) {
		t.Fatalf("poll: %v", err)
	}
	if _, err := c.Refresh(t.Context()); !errors.Is(err, marketplace.ErrNotPaired) {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := c.PushURL(); !errors.Is(err, marketplace.ErrNotPaired) {
		t.Fatalf("push: %v", err)
	}
	if res := c.PostJobStatus(t.Context(), "j", marketplace.StatusReport{Status: "processing"}); res.Outcome != marketplace.Retryable {
		t.Fatalf("status: %v", res.Outcome)
	}
}

// A token imported from the old plugin keeps the pairing: claims first,
// then the given id and expiry, else 30 days.
func TestImportToken(t *testing.T) {
	c, err := marketplace.New(marketplace.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second).UTC()
	tok, err := c.ImportToken(jwtWith(t, map[string]any{"printerId": "p7", "exp": exp.Unix()}), "other", time.Time{})
	if err != nil || tok.PrinterID != "p7" || !tok.Expiry.Equal(exp) {
		t.Fatalf("%v %v", tok, err)
	}
	tok, err = c.ImportToken(jwtWith(t, map[string]any{"iat": 1}), "p8", time.Time{})
	if err != nil || tok.PrinterID != "p8" || time.Until(tok.Expiry) < 29*24*time.Hour {
		t.Fatalf("%v %v", tok, err)
	}
	if _, err := c.ImportToken("garbage", "p9", exp); !errors.Is(err, marketplace.ErrBadToken) {
		t.Fatalf("garbage: %v", err)
	}
	if got, ok := c.Token(); !ok || got.PrinterID != "p8" {
		t.Fatalf("stored %v", got)
	}
}

package marketplace_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

// Every failed API request is told to OnRequestError with its class, and
// a request its caller gave up is not a failure of the marketplace.
func TestRequestErrorClasses(t *testing.T) {
	answers := map[string]func(w http.ResponseWriter){
		"s401": func(w http.ResponseWriter) { w.WriteHeader(http.StatusUnauthorized) },
		"s403": func(w http.ResponseWriter) { w.WriteHeader(http.StatusForbidden) },
		"s429": func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) },
		"s404": func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) },
		"s502": func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) },
		"bad":  func(w http.ResponseWriter) { w.Write([]byte("<html>not json")) },
		"slow": func(w http.ResponseWriter) { time.Sleep(1500 * time.Millisecond) },
		"ok":   func(w http.ResponseWriter) { w.Write([]byte(`{"status":"pending"}`)) },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			SessionID string `json:"session_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		answers[body.SessionID](w)
	}))
	defer srv.Close()
	var mu sync.Mutex
	var got []string
	c, err := marketplace.New(marketplace.Options{BaseURL: srv.URL, StateDir: t.TempDir(), RequestTimeout: time.Second,
		OnRequestError: func(class string) { mu.Lock(); got = append(got, class); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	for _, c2 := range []struct{ session, class string }{
		{"s401", marketplace.ErrorAuth}, {"s403", marketplace.ErrorAuth}, {"s429", marketplace.ErrorRateLimited},
		{"s404", marketplace.ErrorClient}, {"s502", marketplace.ErrorServer}, {"bad", marketplace.ErrorBadResponse},
		{"slow", marketplace.ErrorTimeout}, {"ok", ""},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		_, _, _ = c.PairStatus(t.Context(), c2.session)
		mu.Lock()
		want := []string{c2.class}
		if c2.class == "" {
			want = nil
		}
		if len(got) != len(want) || len(want) == 1 && got[0] != want[0] {
			t.Errorf("%s: classes %v, want %v", c2.session, got, want)
		}
		mu.Unlock()
	}

	// Given up by the caller: not counted.
	got = nil
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, _ = c.PairStatus(ctx, "ok")
	if len(got) != 0 {
		t.Errorf("a cancelled request was counted: %v", got)
	}

	// Nobody listening: network.
	srv.Close()
	_, _, _ = c.PairStatus(t.Context(), "ok")
	if len(got) != 1 || got[0] != marketplace.ErrorNetwork {
		t.Errorf("refused connection: classes %v, want [network]", got)
	}
}

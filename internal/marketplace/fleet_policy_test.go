package marketplace_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{"1.5", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Tuesday, 01-Dec-26 08:02:00 GMT", 2 * time.Minute, true}, // RFC 850
		{"Tue Dec  1 08:03:00 2026", 3 * time.Minute, true},        // asctime
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},     // past: now
	} {
		got, ok := marketplace.ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// fakeAPI is a plain-http marketplace on loopback for policy tests: each
// path answers from its handler; it counts new connections.
type fakeAPI struct {
	srv   *httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	polls []time.Time
}

func newFakeAPI(t *testing.T, routes map[string]http.HandlerFunc) *fakeAPI {
	f := &fakeAPI{}
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.HandleFunc(p, h)
	}
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) notePoll() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls = append(f.polls, time.Now())
	return len(f.polls)
}

func (f *fakeAPI) pollTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.polls...)
}

// fakeJWT is an unsigned token with the claims the printer reads.
func fakeJWT(printerID string, exp time.Time) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]any{"printer_id": printerID, "exp": exp.Unix()})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(claims) + ".sig"
}

// pairedClient is a client of api with a token that is valid for 30 days.
func pairedClient(t *testing.T, api *fakeAPI, tune func(*marketplace.Options)) (*marketplace.Client, marketplace.Options) {
	t.Helper()
	o := marketplace.Options{BaseURL: api.srv.URL, PushBaseURL: api.srv.URL, StateDir: t.TempDir(), RequestTimeout: 5 * time.Second}
	if tune != nil {
		tune(&o)
	}
	c, err := marketplace.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportToken(fakeJWT("printer-1", time.Now().Add(30*24*time.Hour)), "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	return c, o
}

const pollPath = "GET /api/printer-agent/poll-print-queue"

// A poll answered 503 or 429 waits at least the server's Retry-After (in
// seconds or as an HTTP date, capped by MaxRetryAfter, plus up to 10 %).
func TestPollHonoursRetryAfter(t *testing.T) {
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { w.Header().Set("Retry-After", "120"); w.WriteHeader(503) },
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", time.Now().Add(200*time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		},
		func(w http.ResponseWriter) { w.Header().Set("Retry-After", "86400"); w.WriteHeader(503) },
	}
	var api *fakeAPI
	api = newFakeAPI(t, map[string]http.HandlerFunc{pollPath: func(w http.ResponseWriter, r *http.Request) {
		if n := api.notePoll(); n <= len(answers) {
			answers[n-1](w)
			return
		}
		fmt.Fprint(w, `{"jobs":[]}`)
	}})
	clock := &scaledClock{scale: 10000}
	c, _ := pairedClient(t, api, func(o *marketplace.Options) { o.Clock = clock; o.MaxRetryAfter = 10 * time.Minute })
	p := c.NewPoller(marketplace.PollerOptions{Interval: time.Hour, Rand: steadyRand()})
	runPoller(t, p)
	testutil.Eventually(t, 5*time.Second, "four polls", func() bool { return len(api.pollTimes()) >= 4 })
	waits := clock.recorded()
	if len(waits) < 3 {
		t.Fatalf("waits %v", waits)
	}
	for i, w := range []struct{ lo, hi time.Duration }{
		{120 * time.Second, 132 * time.Second},
		{198 * time.Second, 221 * time.Second},
		{10 * time.Minute, 11 * time.Minute}, // a day, capped
	} {
		if waits[i] < w.lo || waits[i] > w.hi {
			t.Errorf("wait %d after a Retry-After: %v, want in [%v, %v] (all %v)", i, waits[i], w.lo, w.hi, waits)
		}
	}
}

// Push triggers poll at once, a second apart at most, until the bucket is
// empty; then one per refill.
func TestTriggeredPollsUseATokenBucket(t *testing.T) {
	var api *fakeAPI
	polled := make(chan struct{}, 10)
	api = newFakeAPI(t, map[string]http.HandlerFunc{pollPath: func(w http.ResponseWriter, r *http.Request) {
		api.notePoll()
		fmt.Fprint(w, `{"jobs":[]}`)
		polled <- struct{}{}
	}})
	c, _ := pairedClient(t, api, nil)
	p := c.NewPoller(marketplace.PollerOptions{Interval: time.Hour, MinInterval: 100 * time.Millisecond, Burst: 3, Refill: 2 * time.Second, Rand: func() float64 { return 0.5 }})
	runPoller(t, p)
	for i := 0; i < 4; i++ {
		p.Trigger()
		select {
		case <-polled:
		case <-time.After(5 * time.Second):
			t.Fatalf("triggered poll %d did not happen", i)
		}
	}
	ts := api.pollTimes()
	for i := 1; i < 3; i++ {
		if gap := ts[i].Sub(ts[i-1]); gap > time.Second || gap < 90*time.Millisecond {
			t.Errorf("triggered poll %d came %v after the previous one, want the 100 ms floor (not the old 5 s gap)", i, gap)
		}
	}
	if gap := ts[3].Sub(ts[2]); gap < time.Second {
		t.Errorf("the fourth triggered poll came %v after the third: the bucket of 3 did not limit it", gap)
	}
}

// The poll interval is PushInterval while the push stream is healthy and
// falls back to Interval at once when it is not.
func TestPollIntervalFollowsPushHealth(t *testing.T) {
	var api *fakeAPI
	api = newFakeAPI(t, map[string]http.HandlerFunc{pollPath: func(w http.ResponseWriter, r *http.Request) {
		api.notePoll()
		fmt.Fprint(w, `{"jobs":[]}`)
	}})
	clock := &scaledClock{scale: 1000}
	c, _ := pairedClient(t, api, func(o *marketplace.Options) { o.Clock = clock })
	p := c.NewPoller(marketplace.PollerOptions{Interval: time.Minute, PushInterval: 20 * time.Minute, Rand: steadyRand()})
	p.SetPushHealthy(true)
	runPoller(t, p)
	testutil.Eventually(t, 5*time.Second, "the first poll", func() bool { return len(api.pollTimes()) == 1 })
	testutil.Eventually(t, 5*time.Second, "the 20-minute wait", func() bool { return len(clock.recorded()) >= 1 })
	if w := clock.recorded()[0]; w < 20*time.Minute-time.Second || w > 20*time.Minute {
		t.Fatalf("wait with a healthy push: %v, want 20m", w)
	}
	if n := len(clock.recorded()); n != 1 {
		t.Fatalf("waits before the push went down: %v", clock.recorded())
	}
	p.SetPushHealthy(false)
	testutil.Eventually(t, 5*time.Second, "a poll at check_interval", func() bool { return len(api.pollTimes()) >= 3 })
	for _, w := range clock.recorded()[1:] {
		if w > time.Minute {
			t.Fatalf("wait without push %v, want ≤ 1m (all %v)", w, clock.recorded())
		}
	}
}

// Any successful call ends the poll's error backoff: the poller retries at
// once instead of waiting it out.
func TestRecoveryEndsPollBackoff(t *testing.T) {
	var api *fakeAPI
	api = newFakeAPI(t, map[string]http.HandlerFunc{
		pollPath: func(w http.ResponseWriter, r *http.Request) {
			if api.notePoll() == 1 {
				w.WriteHeader(502)
				return
			}
			fmt.Fprint(w, `{"jobs":[]}`)
		},
		"POST /api/printer-agent/1.0.0/job-status/{id}": func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) },
	})
	c, _ := pairedClient(t, api, nil)
	p := c.NewPoller(marketplace.PollerOptions{Interval: time.Hour, Rand: steadyRand()})
	runPoller(t, p)
	testutil.Eventually(t, 5*time.Second, "the failed poll", func() bool { return len(api.pollTimes()) == 1 })
	testutil.Eventually(t, 5*time.Second, "the 502 marking the marketplace unreachable", func() bool { _, down := c.Unreachable(); return down })
	sent := time.Now()
	if res := c.PostJobStatus(ctxT(t), "job-1", marketplace.StatusReport{Status: "printing"}); res.Outcome != marketplace.Accepted {
		t.Fatalf("status post: %v", res.Err)
	}
	testutil.Eventually(t, 2*time.Second, "the poll after the recovery", func() bool { return len(api.pollTimes()) == 2 })
	if d := api.pollTimes()[1].Sub(sent); d > time.Second {
		t.Fatalf("poll %v after the recovery, want at once", d)
	}
}

// Status posts and polls share one kept-alive connection, error answers
// with long bodies included.
func TestCallsReuseOneConnection(t *testing.T) {
	var n atomic.Int32
	api := newFakeAPI(t, map[string]http.HandlerFunc{
		pollPath: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"jobs":[]}`+strings.Repeat(" ", 64<<10)) },
		"POST /api/printer-agent/1.0.0/job-status/{id}": func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%3 == 0 {
				w.WriteHeader(500)
				fmt.Fprint(w, strings.Repeat("x", 16<<10)) // more than the 4 KiB kept
				return
			}
			fmt.Fprint(w, `{"ok":true}`+strings.Repeat(" ", 8<<10))
		},
	})
	c, _ := pairedClient(t, api, nil)
	for i := 0; i < 10; i++ {
		c.PostJobStatus(ctxT(t), "job-1", marketplace.StatusReport{Status: "printing"})
		if _, err := c.Poll(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	if got := api.conns.Load(); got != 1 {
		t.Fatalf("%d connections for 20 calls, want 1 kept alive", got)
	}
}

// manualClock has a settable Now (its timers run in real time).
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (m *manualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}
func (m *manualClock) NewTimer(d time.Duration) clock.Timer { return clock.System{}.NewTimer(d) }
func (m *manualClock) advance(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	m.mu.Unlock()
}

// The 401 rule: refused refreshes un-pair only after RefusalCount of them
// over RefusalSpan (remembered across restarts) or on an explicit
// revocation; an accepted refresh ends the streak.
func TestRefreshRefusalPolicy(t *testing.T) {
	var mode atomic.Value
	mode.Store("refuse")
	api := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /api/printer-agent/refresh-token": func(w http.ResponseWriter, r *http.Request) {
			switch mode.Load() {
			case "refuse":
				w.WriteHeader(401)
				fmt.Fprint(w, `{"error":"unauthorized"}`)
			case "revoke":
				w.WriteHeader(401)
				fmt.Fprint(w, `{"error":"printer token revoked"}`)
			default:
				fmt.Fprintf(w, `{"printer_token":%q,"token_expires":%q}`, fakeJWT("printer-1", time.Now().Add(30*24*time.Hour)), time.Now().Add(30*24*time.Hour).Format(time.RFC3339))
			}
		},
	})
	clock := &manualClock{now: time.Now()}
	var lost atomic.Int32
	c, o := pairedClient(t, api, func(o *marketplace.Options) {
		o.Clock = clock
		o.Auth = marketplace.AuthPolicy{RefusalCount: 3, RefusalSpan: time.Hour}
		o.OnPairingLost = func(error) { lost.Add(1) }
	})
	refresh := func(c *marketplace.Client) error { _, err := c.Refresh(ctxT(t)); return err }

	// A burst: many refusals within a minute.
	for i := 0; i < 10; i++ {
		if err := refresh(c); err == nil || errors.Is(err, marketplace.ErrPairingLost) {
			t.Fatalf("refusal %d: %v", i, err)
		}
		clock.advance(5 * time.Second)
	}
	if c.PairingLost() || lost.Load() != 0 {
		t.Fatal("a one-minute burst of 401s un-paired the printer")
	}
	h := c.AuthHealth()
	if h.OK || h.Refusals != 10 || !strings.Contains(h.Problem, "refused the token refresh 10 time(s)") {
		t.Fatalf("health during refusals: %+v", h)
	}
	// The marketplace accepts again: the streak ends.
	mode.Store("accept")
	if err := refresh(c); err != nil {
		t.Fatal(err)
	}
	if h := c.AuthHealth(); !h.OK || h.Refusals != 0 {
		t.Fatalf("health after an accepted refresh: %+v", h)
	}

	// Persistent refusal: the streak survives a restart and un-pairs once
	// it holds RefusalCount refusals over RefusalSpan.
	mode.Store("refuse")
	for i := 0; i < 2; i++ {
		_ = refresh(c)
	}
	o.Clock = clock
	restarted, err := marketplace.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if h := restarted.AuthHealth(); h.Refusals != 2 {
		t.Fatalf("refusals after a restart: %+v", h)
	}
	clock.advance(30 * time.Minute)
	if err := refresh(restarted); errors.Is(err, marketplace.ErrPairingLost) {
		t.Fatal("lost after 3 refusals within half an hour")
	}
	clock.advance(31 * time.Minute)
	if err := refresh(restarted); !errors.Is(err, marketplace.ErrPairingLost) || !restarted.PairingLost() || lost.Load() != 1 {
		t.Fatalf("4 refusals over 61 minutes: %v (lost %v, reported %d)", err, restarted.PairingLost(), lost.Load())
	}

	// An explicit revocation un-pairs at once.
	c2, _ := pairedClient(t, api, func(o *marketplace.Options) { o.Auth = marketplace.AuthPolicy{RefusalCount: 3, RefusalSpan: time.Hour} })
	mode.Store("revoke")
	if err := refresh(c2); !errors.Is(err, marketplace.ErrPairingLost) || !c2.PairingLost() {
		t.Fatalf("explicit revocation: %v", err)
	}
}

// An expired token degrades AuthHealth with the reason.
func TestExpiredTokenDegradesAuthHealth(t *testing.T) {
	api := newFakeAPI(t, nil)
	c, _ := pairedClient(t, api, nil)
	if h := c.AuthHealth(); !h.OK {
		t.Fatalf("fresh token: %+v", h)
	}
	if _, err := c.ImportToken(fakeJWT("printer-1", time.Now().Add(-time.Minute)), "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if h := c.AuthHealth(); h.OK || !h.Expired || !strings.Contains(h.Problem, "expired") {
		t.Fatalf("expired token: %+v", h)
	}
}

// A download answered 429/503 waits the server's Retry-After and tries
// again instead of failing the job.
func TestDownloadWaitsOutRetryAfter(t *testing.T) {
	var tries atomic.Int32
	api := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /files/job-1": func(w http.ResponseWriter, r *http.Request) {
			if tries.Add(1) == 1 {
				w.Header().Set("Retry-After", "42")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.Header().Set("Content-Length", "4")
			fmt.Fprint(w, "body")
		},
	})
	clock := &scaledClock{scale: 10000}
	c, _ := pairedClient(t, api, func(o *marketplace.Options) { o.Clock = clock })
	d, err := c.Download(ctxT(t), "job-1", api.srv.URL+"/files/job-1")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	waits := clock.recorded()
	if tries.Load() != 2 || len(waits) != 1 || waits[0] < 42*time.Second || waits[0] > 47*time.Second {
		t.Fatalf("%d tries, waits %v: want one wait of Retry-After 42 s (+ ≤ 10 %%)", tries.Load(), waits)
	}
}

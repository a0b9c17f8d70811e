package marketplace_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// runPoller runs a poller and sends every handed-out job on the channel.
func runPoller(t *testing.T, p *marketplace.Poller) (<-chan marketplace.Job, <-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	jobs := make(chan marketplace.Job, 100)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(_ context.Context, js []marketplace.Job) {
			for _, j := range js {
				jobs <- j
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return jobs, done, cancel
}

func receiveJob(t *testing.T, jobs <-chan marketplace.Job, within time.Duration) marketplace.Job {
	t.Helper()
	select {
	case j := <-jobs:
		return j
	case <-time.After(within):
		t.Fatalf("no job within %v", within)
	}
	return marketplace.Job{}
}

// 5xx answers and timeouts are retried with exponential backoff from the
// 5 s floor; the job arrives once the marketplace recovers, exactly once.
func TestPollerBacksOffOnErrorsAndTimeouts(t *testing.T) {
	clock := &scaledClock{scale: 1000}
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) {
		o.Clock = clock
		o.RequestTimeout = 300 * time.Millisecond
	})
	e.pair()
	id := e.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	e.sim.SetFault(marketsim.CallPoll, marketsim.Fault{Status: 503, Count: 3})
	p := e.client.NewPoller(marketplace.PollerOptions{Interval: time.Hour, Rand: steadyRand()})
	jobs, _, cancel := runPoller(t, p)
	if j := receiveJob(t, jobs, 5*time.Second); j.ID != id {
		t.Fatalf("got job %s, want %s", j.ID, id)
	}
	waits := clock.recorded()
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}
	if len(waits) < 3 {
		t.Fatalf("waits %v", waits)
	}
	for i, w := range want {
		if waits[i] > w || waits[i] < w-time.Second {
			t.Fatalf("wait %d was %v, want ≈%v (all: %v)", i, waits[i], w, waits[:3])
		}
	}
	if n := e.sim.Calls(marketsim.CallPoll); n != 4 {
		t.Fatalf("%d polls, want 4 (3 failures + 1 success)", n)
	}
	cancel()

	// A poll that hangs is cut by the request timeout and retried.
	e2 := newEnv(t, marketplace.ProfileLegacy, nil, func(o *marketplace.Options) {
		o.Clock = &scaledClock{scale: 1000}
		o.RequestTimeout = 200 * time.Millisecond
	})
	e2.pair()
	id2 := e2.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	e2.sim.SetFault(marketsim.CallPoll, marketsim.Fault{Silent: true, Count: 1})
	jobs2, _, _ := runPoller(t, e2.client.NewPoller(marketplace.PollerOptions{Interval: time.Hour, Rand: steadyRand()}))
	if j := receiveJob(t, jobs2, 5*time.Second); j.ID != id2 {
		t.Fatalf("got %s after a timeout", j.ID)
	}
	if n := e2.sim.Calls(marketsim.CallPoll); n != 2 {
		t.Fatalf("%d polls, want 2", n)
	}
}

// The same job id in consecutive polls is one job; a push-triggered burst
// coalesces, and polls never overlap.
func TestPollerDedupesAndCoalesces(t *testing.T) {
	clock := &scaledClock{scale: 1000}
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) { o.Clock = clock })
	e.pair()
	first := e.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	p := e.client.NewPoller(marketplace.PollerOptions{Interval: time.Hour, Rand: steadyRand()})
	jobs, _, _ := runPoller(t, p)
	if j := receiveJob(t, jobs, 5*time.Second); j.ID != first {
		t.Fatalf("first job %s", j.ID)
	}
	// The job stays queued (no terminal status yet): many more polls.
	for i := 0; i < 3; i++ {
		before := e.sim.Calls(marketsim.CallPoll)
		p.Trigger()
		testutil.Eventually(t, 5*time.Second, "a triggered poll", func() bool { return e.sim.Calls(marketsim.CallPoll) > before })
	}
	second := e.createJob([]byte("G1 X1\n"), marketsim.DownloadGCS)
	p.Trigger()
	if j := receiveJob(t, jobs, 5*time.Second); j.ID != second {
		t.Fatalf("got %s again, want only the new job %s", j.ID, second)
	}
	select {
	case j := <-jobs:
		t.Fatalf("job %s handed out twice", j.ID)
	default:
	}

	// A burst of triggers coalesces into at most two polls (one running or
	// pending, one more), and never two at once.
	e.sim.SetFault(marketsim.CallPoll, marketsim.Fault{Latency: 50 * time.Millisecond})
	before := e.sim.Calls(marketsim.CallPoll)
	for i := 0; i < 50; i++ {
		p.Trigger()
	}
	testutil.Eventually(t, 5*time.Second, "the burst's poll", func() bool { return e.sim.Calls(marketsim.CallPoll) > before })
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // direct callers share the single flight too
		wg.Add(1)
		go func() { defer wg.Done(); p.PollOnce(context.Background()) }()
	}
	wg.Wait()
	if got := e.sim.Calls(marketsim.CallPoll) - before; got > 2+4 {
		t.Fatalf("%d polls for a burst of 50 triggers and 4 direct calls", got)
	}
	if m := e.sim.MaxConcurrent(marketsim.CallPoll); m != 1 {
		t.Fatalf("%d polls were in flight at once", m)
	}
}

// A 401 on a poll refreshes the token and retries: the printer stays paired.
func TestPoll401RefreshesAndRetries(t *testing.T) {
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			e := newEnv(t, p, nil, nil)
			old := e.pair()
			id := e.createJob([]byte("G28\n"), marketsim.DownloadMarketplace)
			e.sim.ExpireTokens(old.PrinterID)
			jobs, err := e.client.Poll(ctxT(t))
			if err != nil || len(jobs) != 1 || jobs[0].ID != id {
				t.Fatalf("poll after expiry: %v", err)
			}
			tok, _ := e.client.Token()
			if tok.Value == old.Value || e.client.PairingLost() || e.lost.count() != 0 {
				t.Fatal("token not refreshed, or pairing marked lost")
			}
			if n := e.sim.Calls(marketsim.CallRefresh); n != 1 {
				t.Fatalf("%d refreshes", n)
			}
			// Download and status go through the same path.
			e.sim.ExpireTokens(old.PrinterID)
			e.sim.SetFault(marketsim.CallJobStatus, marketsim.Fault{Status: 401, Count: 1})
			if res := e.client.PostJobStatus(ctxT(t), id, marketplace.StatusReport{Status: "processing"}); res.Outcome != marketplace.Accepted {
				t.Fatalf("status after a 401: %v %v", res.Outcome, res.Err)
			}
		})
	}
}

// Only a refresh rejected with 401 loses the pairing: reported once, loudly,
// with the key material and token file kept, and remembered across restarts.
func TestRefresh401LosesPairingOnce(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	tok := e.pair()
	// A 5xx on refresh is not a loss.
	e.sim.SetFault(marketsim.CallRefresh, marketsim.Fault{Status: 502, Count: 1})
	if _, err := e.client.Refresh(ctxT(t)); err == nil || errors.Is(err, marketplace.ErrPairingLost) {
		t.Fatalf("502 on refresh: %v", err)
	}
	e.sim.RevokeTokens(tok.PrinterID)
	for i := 0; i < 3; i++ {
		if _, err := e.client.Poll(ctxT(t)); !errors.Is(err, marketplace.ErrPairingLost) {
			t.Fatalf("poll %d: %v", i, err)
		}
	}
	if res := e.client.PostJobStatus(ctxT(t), "job-1", marketplace.StatusReport{Status: "processing"}); res.Outcome != marketplace.Retryable {
		t.Fatalf("status while lost: %v (must be kept for later, not dropped)", res.Outcome)
	}
	if n := e.lost.count(); n != 1 {
		t.Fatalf("pairing loss reported %d times", n)
	}
	if !e.client.PairingLost() {
		t.Fatal("PairingLost false")
	}
	if err := e.client.NewPoller(marketplace.PollerOptions{}).Run(ctxT(t), nil); !errors.Is(err, marketplace.ErrPairingLost) {
		t.Fatalf("poller on a lost pairing: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(e.stateDir, marketplace.TokenFileName))
	if err != nil || len(b) == 0 {
		t.Fatalf("token file gone: %v", err)
	}
	restarted := e.newClient()
	if !restarted.PairingLost() {
		t.Fatal("lost pairing forgotten after restart")
	}
	if _, ok := restarted.Token(); !ok {
		t.Fatal("old token not kept")
	}
	if err := restarted.RunTokenRefresher(ctxT(t), marketplace.RefresherOptions{}); !errors.Is(err, marketplace.ErrPairingLost) {
		t.Fatalf("refresher on a lost pairing: %v", err)
	}
	if n := e.lost.count(); n != 1 {
		t.Fatalf("pairing loss reported %d times after restart", n)
	}
	// Pairing again clears the state.
	e.client = restarted
	e.pair()
	if restarted.PairingLost() {
		t.Fatal("still lost after pairing again")
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, marketplace.PairingLostFileName)); !os.IsNotExist(err) {
		t.Fatalf("pairing-lost mark kept: %v", err)
	}
}

// The refresher follows the spec's window and retries failures with
// backoff, never giving up.
func TestTokenRefresherRetriesUntilSuccess(t *testing.T) {
	clock := &scaledClock{scale: 1e6}
	// 5-day tokens are always inside the 7-day window: refresh at once.
	e := newEnv(t, marketplace.ProfileCurrent, &marketsim.Options{TokenLifetime: 5 * 24 * time.Hour},
		func(o *marketplace.Options) { o.Clock = clock })
	old := e.pair()
	e.sim.SetFault(marketsim.CallRefresh, marketsim.Fault{Status: 503, Count: 4})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.client.RunTokenRefresher(ctx, marketplace.RefresherOptions{}) }()
	testutil.Eventually(t, 5*time.Second, "a successful refresh", func() bool {
		tok, _ := e.client.Token()
		return tok.Value != old.Value
	})
	// After success it must not spin: the next wait is the 80 % point
	// (4 days for a 5-day token).
	testutil.Eventually(t, 5*time.Second, "the post-refresh wait", func() bool {
		w := clock.recorded()
		return len(w) >= 5 && w[4] > 3*24*time.Hour
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("refresher ended with %v", err)
	}
	w := clock.recorded()
	for i, base := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute} {
		if lo, hi := base*8/10, base*12/10; w[i] < lo || w[i] > hi {
			t.Fatalf("retry %d waited %v, want %v ±20%% (all %v)", i, w[i], base, w)
		}
	}
	if n := e.sim.Calls(marketsim.CallRefresh); n != 5 {
		t.Fatalf("%d refresh calls, want 5", n)
	}
	if e.client.PairingLost() {
		t.Fatal("5xx refresh failures lost the pairing")
	}
}

func TestDownloadFaults(t *testing.T) {
	gcode := fixtureGcode(t)
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) {
		o.DownloadIdleTimeout = 300 * time.Millisecond
	})
	e.pair()
	storageJob := e.createJob(gcode, marketsim.DownloadStorage)
	proxyJob := e.createJob(gcode, marketsim.DownloadGCS)
	jobs, err := e.client.Poll(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]marketplace.Job{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	read := func(j marketplace.Job) ([]byte, error) {
		d, err := e.client.Download(ctxT(t), j.ID, j.DownloadURL)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return io.ReadAll(d)
	}

	t.Run("truncated body is an error, never EOF", func(t *testing.T) {
		for _, c := range []struct {
			call marketsim.Call
			job  string
		}{{marketsim.CallStorage, storageJob}, {marketsim.CallDownload, proxyJob}} {
			e.sim.SetFault(c.call, marketsim.Fault{TruncateAt: 100_000, Count: 1})
			got, err := read(byID[c.job])
			if !errors.Is(err, marketplace.ErrTruncated) {
				t.Fatalf("%s: err %v after %d bytes", c.call, err, len(got))
			}
		}
	})
	t.Run("5xx is an HTTP error", func(t *testing.T) {
		e.sim.SetFault(marketsim.CallDownload, marketsim.Fault{Status: 500, Count: 1})
		var he *marketplace.HTTPError
		if _, err := read(byID[proxyJob]); !errors.As(err, &he) || he.StatusCode != 500 {
			t.Fatalf("%v", err)
		}
	})
	t.Run("stalled server hits the idle timeout", func(t *testing.T) {
		e.sim.SetFault(marketsim.CallStorage, marketsim.Fault{Silent: true, Count: 1})
		start := time.Now()
		if _, err := read(byID[storageJob]); !errors.Is(err, marketplace.ErrIdleTimeout) {
			t.Fatalf("%v", err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("idle timeout took %v", el)
		}
	})
	t.Run("size cap", func(t *testing.T) {
		small := e.opts
		small.MaxDownloadBytes = 1000
		c, err := marketplace.New(small)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Download(ctxT(t), byID[storageJob].ID, byID[storageJob].DownloadURL); !errors.Is(err, marketplace.ErrTooLarge) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("a 401 on the proxy refreshes", func(t *testing.T) {
		e.sim.ExpireTokens(e.printerID())
		got, err := read(byID[proxyJob])
		if err != nil || decryptJob(t, e.priv, byID[proxyJob], got) == nil {
			t.Fatal(err)
		}
	})
	t.Run("clean download after the faults", func(t *testing.T) {
		got, err := read(byID[storageJob])
		if err != nil {
			t.Fatal(err)
		}
		if string(decryptJob(t, e.priv, byID[storageJob], got)) != string(gcode) {
			t.Fatal("G-code differs")
		}
	})
	if auth := e.sim.StorageAuthorizations(); len(auth) != 0 {
		t.Fatalf("the storage host received %d Authorization headers", len(auth))
	}
}

func TestJobStatusOutcomes(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) { o.RequestTimeout = 300 * time.Millisecond })
	e.pair()
	id := e.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	post := func() marketplace.StatusResult {
		return e.client.PostJobStatus(ctxT(t), id, marketplace.StatusReport{Status: jobstatus.Processing})
	}
	for _, c := range []struct {
		fault marketsim.Fault
		want  marketplace.Outcome
		code  int
	}{
		{marketsim.Fault{Status: 503}, marketplace.Retryable, 503},
		{marketsim.Fault{Status: 500}, marketplace.Retryable, 500},
		{marketsim.Fault{Status: 429}, marketplace.Retryable, 429},
		{marketsim.Fault{Status: 408}, marketplace.Retryable, 408},
		{marketsim.Fault{Status: 401}, marketplace.Retryable, 401}, // still 401 after the refresh
		{marketsim.Fault{Status: 404}, marketplace.Rejected, 404},
		{marketsim.Fault{Status: 409}, marketplace.Rejected, 409},
		{marketsim.Fault{Drop: true}, marketplace.Retryable, 0},
		{marketsim.Fault{Silent: true}, marketplace.Retryable, 0},
	} {
		e.sim.SetFault(marketsim.CallJobStatus, c.fault)
		res := post()
		e.sim.ClearFaults()
		if res.Outcome != c.want || res.HTTPStatus != c.code || res.Err == nil {
			t.Fatalf("fault %+v: %v %d %v", c.fault, res.Outcome, res.HTTPStatus, res.Err)
		}
	}
	res := e.client.PostJobStatus(ctxT(t), id, marketplace.StatusReport{Status: "exploded"})
	if res.Outcome != marketplace.Rejected || res.HTTPStatus != 400 || res.Answer == "" {
		t.Fatalf("invalid status: %+v", res)
	}
	// Nothing was recorded by the failures; the retry is.
	if res := post(); res.Outcome != marketplace.Accepted {
		t.Fatal(res.Err)
	}
	if h := e.sim.StatusHistory(id); len(h) != 1 {
		t.Fatalf("history %+v", h)
	}
}

package jobs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

// Heartbeats back off to RetryMax; a report that changes the job's state
// is retried within [RetryMin/2, 1.6·RetryMin] for as long as it takes,
// so it reaches a recovered marketplace within seconds.
func TestRetryDelay(t *testing.T) {
	e := &Engine{o: Options{RetryMin: 5 * time.Second, RetryMax: 5 * time.Minute}}
	for attempt := 1; attempt <= 30; attempt++ {
		for range 20 {
			d := e.retryDelay(false, attempt, nil)
			if d < 2500*time.Millisecond || d > 8*time.Second {
				t.Fatalf("state report, attempt %d: %v, want within [2.5 s, 8 s]", attempt, d)
			}
		}
	}
	if d := e.retryDelay(true, 10, nil); d < 4*time.Minute {
		t.Fatalf("heartbeat, attempt 10: %v, want the backoff near RetryMax", d)
	}
}

// MarketplaceBack makes every report in backoff due at once and wakes the
// sender; a final report that supersedes a heartbeat in long backoff keeps
// the short cadence of state reports.
func TestMarketplaceBackAndSupersededHeartbeat(t *testing.T) {
	now := time.Now()
	e := &Engine{o: Options{RetryMin: 5 * time.Second, RetryMax: 5 * time.Minute}, clock: clock.System{},
		outboxWake: make(chan struct{}, 1), recs: map[string]*record{}}
	r := &record{}
	r.ID = "job-1"
	r.Pending = []pendingReport{{Heartbeat: true, Attempts: 8, NextAttempt: now.Add(4 * time.Minute), Queued: now}}
	e.recs[r.ID] = r
	e.queueReportLocked(r, Report{Status: "success"}, false)
	if len(r.Pending) != 1 || r.Pending[0].Heartbeat {
		t.Fatalf("pending after the final report: %+v", r.Pending)
	}
	if next := r.Pending[0].NextAttempt; next.After(time.Now().Add(8 * time.Second)) {
		t.Fatalf("the final report inherited the heartbeat's backoff: next attempt in %v", time.Until(next))
	}
	r.Pending[0].NextAttempt = time.Now().Add(time.Minute)
	e.MarketplaceBack()
	if r.Pending[0].NextAttempt.After(time.Now()) {
		t.Fatal("MarketplaceBack left the report in backoff")
	}
	select {
	case <-e.outboxWake:
	default:
		t.Fatal("MarketplaceBack did not wake the outbox")
	}
}

// Outbox counts every pending report of every job and finds the oldest.
func TestOutboxDepthAndOldest(t *testing.T) {
	e := &Engine{recs: map[string]*record{}}
	if n, oldest := e.Outbox(); n != 0 || !oldest.IsZero() {
		t.Fatalf("empty outbox: %d reports, oldest %v", n, oldest)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := &record{}, &record{}
	a.ID, b.ID = "a", "b"
	a.Pending = []pendingReport{{Queued: t0.Add(time.Minute)}, {Queued: t0.Add(2 * time.Minute)}}
	b.Pending = []pendingReport{{Queued: t0}}
	e.recs["a"], e.recs["b"] = a, b
	if n, oldest := e.Outbox(); n != 3 || !oldest.Equal(t0) {
		t.Fatalf("outbox: %d reports, oldest %v; want 3, %v", n, oldest, t0)
	}
}

// The outbox finds the server's Retry-After through the backoff.ServerWaiter
// interface, without importing the marketplace client: the client's real
// error must satisfy it, wrapped as PostStatus returns it.
func TestRetryDelayHonoursServerWait(t *testing.T) {
	e := &Engine{o: Options{RetryMin: 5 * time.Second, RetryMax: time.Minute}}
	asked := 10 * time.Minute
	err := fmt.Errorf("posting status: %w", &marketplace.HTTPError{StatusCode: 503, RetryAfter: asked})
	for _, heartbeat := range []bool{true, false} {
		d := e.retryDelay(heartbeat, 1, err)
		if d < asked || d > asked+asked/10 {
			t.Errorf("heartbeat=%v: waits %v after a Retry-After of %v, want [%v, %v]", heartbeat, d, asked, asked, asked+asked/10)
		}
		if d := e.retryDelay(heartbeat, 1, errors.New("connection refused")); d > 8*time.Second {
			t.Errorf("heartbeat=%v: waits %v without a Retry-After, want the backoff (≤ 8s)", heartbeat, d)
		}
	}
}

package jobs

import (
	"context"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// The outbox is the set of pending reports in the job records. One sender
// delivers them one at a time: each job's reports in order (only the oldest
// pending report of a job is ever in flight), jobs interleaved by age, each
// retried with backoff until the marketplace accepts or refuses it for good.

// queueReportLocked appends a report to r's outbox. Pending heartbeats of
// r are dropped first: a newer report supersedes them, so an offline
// printer keeps at most one heartbeat per job, not one per 30 s.
func (e *Engine) queueReportLocked(r *record, rep Report, heartbeat bool) {
	p := pendingReport{Seq: r.Seq, Heartbeat: heartbeat, Report: rep, Queued: e.clock.Now()}
	if len(r.Pending) > 0 && r.Pending[0].Heartbeat {
		// The superseded heartbeat was being retried: its successor
		// keeps the backoff instead of hammering a server that is down,
		// but a state change keeps its own short cadence (retryDelay).
		p.Attempts, p.NextAttempt = r.Pending[0].Attempts, r.Pending[0].NextAttempt
		if !heartbeat && p.Attempts > 0 {
			p.NextAttempt = earliest(p.NextAttempt, p.Queued.Add(e.retryDelay(false, p.Attempts, nil)))
		}
	}
	kept := r.Pending[:0]
	for _, q := range r.Pending {
		if !q.Heartbeat {
			kept = append(kept, q)
		}
	}
	r.Pending = append(kept, p)
}

// Outbox says how many status reports wait for the marketplace and when
// the oldest of them was queued (zero when none).
func (e *Engine) Outbox() (reports int, oldest time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.recs {
		for _, p := range r.Pending {
			reports++
			if oldest.IsZero() || p.Queued.Before(oldest) {
				oldest = p.Queued
			}
		}
	}
	return reports, oldest
}

// nextDueLocked finds the report to send now: the head of some job's
// outbox whose retry time has come, oldest first. Otherwise it returns how
// long until the next one is due (0: nothing pending).
func (e *Engine) nextDueLocked(now time.Time) (id string, p pendingReport, wait time.Duration) {
	var best *record
	for _, r := range e.recs {
		if len(r.Pending) == 0 || e.unsaved[r.ID] {
			// An unsaved record's reports wait until it is on disk:
			// a restart before that must not say anything twice.
			continue
		}
		head := r.Pending[0]
		if head.NextAttempt.After(now) {
			if d := head.NextAttempt.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if best == nil || head.Queued.Before(best.Pending[0].Queued) {
			best = r
		}
	}
	if best == nil {
		return "", pendingReport{}, wait
	}
	return best.ID, best.Pending[0], 0
}

func (e *Engine) runOutbox(ctx context.Context) {
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		e.mu.Lock()
		id, p, wait := e.nextDueLocked(e.clock.Now())
		e.mu.Unlock()
		if id != "" {
			e.deliver(ctx, id, p)
			continue
		}
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		if wait > 0 {
			timer = e.clock.NewTimer(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.outboxWake:
		case <-timerC(timer):
			timer = nil
		}
	}
}

// sameReport tells whether the head of the outbox is still the report that
// was sent (a heartbeat may have been superseded meanwhile).
func sameReport(a, b pendingReport) bool {
	return a.Seq == b.Seq && a.Heartbeat == b.Heartbeat && a.Queued.Equal(b.Queued) && a.Report.Status == b.Report.Status
}

func (e *Engine) deliver(ctx context.Context, id string, p pendingReport) {
	sctx, cancel := context.WithTimeout(ctx, e.o.SendTimeout)
	outcome, answer, err := e.o.Marketplace.PostStatus(sctx, id, p.Report)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the report stays pending for the next run
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.recs[id]
	if r == nil || len(r.Pending) == 0 || !sameReport(r.Pending[0], p) {
		return
	}
	switch outcome {
	case Delivered:
		r.Pending = r.Pending[1:]
		e.log.Debug("status report delivered", "job", id, "status", p.Report.Status)
	case Rejected:
		r.Pending = r.Pending[1:]
		answer = redact.Message(answer)
		r.Rejected = append(r.Rejected, rejectedReport{Report: p.Report, Answer: answer, At: e.clock.Now()})
		e.log.Warn("marketplace refused a status report for good", "job", id, "status", p.Report.Status, "answer", answer)
	default:
		h := &r.Pending[0]
		h.Attempts++
		delay := e.retryDelay(h.Heartbeat, h.Attempts, err)
		h.NextAttempt = e.clock.Now().Add(delay)
		level := e.log.Debug
		if h.Attempts >= 3 {
			level = e.log.Warn
		}
		var errText string
		if err != nil {
			errText = redact.Message(err.Error())
		}
		level("status report not delivered; will retry", "job", id, "status", p.Report.Status,
			"attempt", h.Attempts, "retry_in", delay, "err", errText, "answer", redact.Message(answer))
		e.broadcastLocked()
		return // nothing to persist: retries restart promptly after a restart
	}
	_ = e.saveLocked(r) // unsaved: retried; a restart before that resends the report
	e.broadcastLocked()
}

// retryDelay is the wait before the next attempt of a report that was not
// delivered. Heartbeats back off up to RetryMax: a newer one supersedes
// them anyway. A report that changes the job's state (a final status
// above all) is retried every 4–8 s (at RetryMin 5 s) for as long as it
// takes: these retries are what notices that the marketplace is back, and
// the owner and the buyer see the outcome within seconds of it. The
// server's Retry-After wins over both (capped by the client, with jitter).
func (e *Engine) retryDelay(heartbeat bool, attempt int, err error) time.Duration {
	if heartbeat {
		// ±20 % jitter so a fleet does not retry in lockstep.
		return backoff.AfterServerWait(err, backoff.Jitter(backoff.Exp(e.o.RetryMin, e.o.RetryMax, attempt), 0.2))
	}
	ceiling := min(e.o.RetryMin*8/5, e.o.RetryMax)
	// Jitter over the upper half: a fleet spreads, none waits past d.
	d := backoff.Below(backoff.Exp(e.o.RetryMin, ceiling, attempt), 0.5)
	return backoff.AfterServerWait(err, d)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// MarketplaceBack tells the outbox that the marketplace answers again
// (any call succeeded, or the push stream connected): every report in
// backoff is due at once, so statuses queued during an outage arrive
// within seconds of its end.
func (e *Engine) MarketplaceBack() {
	e.mu.Lock()
	now := e.clock.Now()
	due := false
	for _, r := range e.recs {
		if len(r.Pending) > 0 && r.Pending[0].NextAttempt.After(now) {
			r.Pending[0].NextAttempt = now
			due = true
		}
	}
	e.mu.Unlock()
	if due {
		e.kickOutbox()
	}
}

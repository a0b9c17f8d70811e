package jobs

import (
	"errors"
	"fmt"
	"sort"
	"syscall"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
)

// When the state directory cannot be written (a full SD card, above all),
// nothing is lost and nothing is said twice:
//   - a transition that must be durable before it is acted on (downloading,
//     ready, printing) is undone in memory and the job waits in the queue;
//   - any other change (a print's end, a delivered report, the bed-clear
//     state) stays in memory, marked unsaved, and is written by a retry
//     with backoff;
//   - the outbox sends no report of an unsaved record, so what the
//     marketplace hears is always what a restart would find on disk;
//   - no new job starts until the journal can be written again.

// Backoff of the journal retries: doubling from the first to the last.
const (
	flushRetryMin = time.Second
	flushRetryMax = time.Minute
)

// saveLocked writes r, or marks it unsaved and schedules a retry.
func (e *Engine) saveLocked(r *record) error {
	err := e.st.save(r)
	if err == nil {
		delete(e.unsaved, r.ID)
		return nil
	}
	e.unsaved[r.ID] = true
	e.journalFailedLocked(err)
	return err
}

// saveBedLocked writes the bed-clear state, or marks it unsaved and
// schedules a retry. Until it is written no job starts: a restart would
// find the state of before (after a print: "clear", the unsafe side).
func (e *Engine) saveBedLocked() error {
	err := saveBed(e.o.StateDir, e.bed)
	e.bedUnsaved = err != nil
	if err != nil {
		e.journalFailedLocked(err)
	}
	return err
}

// journalFailedLocked notes a failed write and has the loop arm the retry.
func (e *Engine) journalFailedLocked(err error) {
	if e.diskErr == nil {
		e.log.Error("cannot write the job journal; keeping job updates in memory until it can", "problem", journalProblem(err), "err", err)
	}
	e.diskErr = err
	e.broadcastLocked()
	e.kick() // the loop arms the retry (armFlushLocked)
}

// armFlushLocked schedules the next retry while the journal is failing. It
// runs on the loop goroutine, the only one that uses the engine's timers.
func (e *Engine) armFlushLocked() {
	if e.diskErr != nil && e.flushTimer == nil {
		e.flushAttempts++
		e.flushTimer = e.clock.NewTimer(backoff.Exp(flushRetryMin, flushRetryMax, e.flushAttempts))
	}
}

// flushLocked retries the unsaved records, oldest change first.
func (e *Engine) flushLocked() {
	ids := make([]string, 0, len(e.unsaved))
	for id := range e.unsaved {
		if e.recs[id] == nil {
			delete(e.unsaved, id) // never accepted (Offer, SubmitLocal)
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return e.recs[ids[i]].Updated.Before(e.recs[ids[j]].Updated) })
	for _, id := range ids {
		if err := e.saveLocked(e.recs[id]); err != nil {
			return
		}
	}
	if e.bedUnsaved {
		if err := e.saveBedLocked(); err != nil {
			return
		}
	}
	if err := e.st.idx.flush(); err != nil {
		e.diskErr = err
		return
	}
	if e.diskErr != nil {
		e.log.Info("the job journal is writable again; job updates written", "jobs", len(ids))
	}
	e.diskErr, e.flushAttempts = nil, 0
	e.broadcastLocked()
	e.kick()
	e.kickOutbox()
}

// ErrJournalUnwritable is returned by SubmitLocal when the job cannot be
// journaled (a full state disk).
var ErrJournalUnwritable = errors.New("jobs: the job journal cannot be written")

// journalProblem says in a few words why the journal cannot be written.
func journalProblem(err error) string {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return "state disk full"
	}
	return "state directory not writable"
}

// journalProblemLocked is the Snapshot's JournalProblem.
func (e *Engine) journalProblemLocked() string {
	if e.diskErr == nil {
		return ""
	}
	bed := ""
	if e.bedUnsaved {
		bed = " and the bed-clear state"
	}
	return fmt.Sprintf("%s: %d job update(s)%s waiting to be written", journalProblem(e.diskErr), len(e.unsaved), bed)
}

// requeueUnjournaledLocked gives up the active job whose next transition
// could not be journaled: the plaintext is dropped and the job waits in the
// queue (on disk it is still downloading, which a restart queues again too).
func (e *Engine) requeueUnjournaledLocked(a *activeJob, r *record, before record) {
	undoLocked(r, before)
	r.State = Accepted
	r.Message = "Queued again: " + journalProblem(e.diskErr)
	if a.prepared != nil {
		_ = a.prepared.File.Close()
		a.prepared = nil
	}
	e.active = nil
	e.broadcastLocked()
}

// undoLocked puts r back as it was before a transition that could not be
// journaled, for a transition that must be durable before it is acted on.
// The record stays marked unsaved: writing its older state is harmless, and
// the retry is what tells when the journal works again.
func undoLocked(r *record, before record) {
	*r = before
}

// snapshotRecord copies r deeply enough for undoLocked.
func snapshotRecord(r *record) record {
	c := *r
	c.Pending = append([]pendingReport(nil), r.Pending...)
	c.Rejected = append([]rejectedReport(nil), r.Rejected...)
	return c
}

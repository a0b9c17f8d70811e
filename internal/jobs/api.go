package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
)

// The engine's public API: offers from the marketplace, local jobs,
// cancellation, the bed-clear confirmation and snapshots.

// Updated returns a channel closed at the next change of any job, the
// queue or the bed state: API long-polls and tests wait on it.
func (e *Engine) Updated() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// Offer hands the engine the jobs of a marketplace poll. New ids are
// journaled as accepted and queued; known unfinished ids get their key
// material back (after a restart); finished ids are ignored, so a job is
// never printed twice.
func (e *Engine) Offer(offers []Offer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.o.Marketplace == nil {
		return
	}
	for _, o := range offers {
		if err := checkID(o.ID); err != nil {
			e.log.Warn("ignoring a job with an unusable id", "err", err)
			continue
		}
		if r, ok := e.recs[o.ID]; ok {
			if r.State == Accepted && !r.Local {
				e.offers[o.ID] = o
				delete(e.notBefore, o.ID)
				e.kick()
			}
			continue
		}
		if e.st.idx.known(o.ID) {
			continue // finished, its record pruned: never printed again
		}
		created := o.CreatedAt
		if created.IsZero() {
			created = e.clock.Now()
		}
		r := &record{ID: o.ID, Name: sanitizeName(o.Name), PurchaseID: o.PurchaseID, Created: created}
		if err := e.transition(r, Accepted, "Queued", &Report{Status: jobstatus.Processing, Message: "Queued"}); err != nil {
			// Not journaled, so not accepted: the next poll offers it again.
			continue
		}
		e.recs[o.ID] = r
		e.offers[o.ID] = o
		e.console("job received: " + displayName(r))
		e.kick()
	}
}

// SubmitLocal queues a job from the local start-print API and returns its id.
func (e *Engine) SubmitLocal(j LocalJob) (string, error) {
	if j.Open == nil {
		return "", errors.New("jobs: local job without a file")
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := "local-" + hex.EncodeToString(b[:])
	e.mu.Lock()
	defer e.mu.Unlock()
	if ok, until := e.localFailuresLocked(e.clock.Now()); !ok {
		return "", tooManyFailures(until)
	}
	if err := e.checkLocalRoomLocked(j.Size); err != nil {
		return "", err
	}
	r := &record{ID: id, Local: true, Name: sanitizeName(j.Name), Created: e.clock.Now()}
	if err := e.transition(r, Accepted, "Queued", nil); err != nil {
		return "", fmt.Errorf("%w (%s): try again when space is free", ErrJournalUnwritable, journalProblem(err))
	}
	e.recs[id] = r
	e.locals[id] = j
	e.kick()
	return id, nil
}

// sanitizeName cleans a job name from the marketplace or a local caller
// before it is journaled, shown or sent to Klipper's console.
func sanitizeName(s string) string { return textsafe.Clean(s, 200) }

// Cancel cancels a job: a queued one at once, one being prepared before it
// reaches Klipper, a print through Klipper (the job ends when Klipper
// reports the print cancelled).
func (e *Engine) Cancel(id, reason string) error {
	if reason == "" {
		reason = "by the owner"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.recs[id]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", ErrUnknownJob, id)
	case r.State.Terminal():
		return fmt.Errorf("%w: %s is %s", ErrFinished, id, r.State)
	}
	if a := e.active; a != nil && a.id == id {
		if a.cancelReason == "" {
			a.cancelReason = reason
		}
		if a.handed {
			go e.cancelInKlipper(id, reason)
		} else if a.prepCancel != nil {
			a.prepCancel()
		}
		return nil
	}
	for i, rid := range e.recovering {
		if rid == id {
			// Not known yet whether Klipper still prints it; ask it
			// to cancel and let reconciliation report the outcome.
			e.recovering = append(e.recovering[:i:i], e.recovering[i+1:]...)
			go e.cancelInKlipper(id, reason)
			e.endLocked(r, Cancelled, "Cancelled: "+reason)
			e.printEndedLocked()
			e.kick()
			return nil
		}
	}
	e.endLocked(r, Cancelled, "Cancelled: "+reason)
	e.kick()
	return nil
}

// ConfirmBedClear records the owner's confirmation (LMNT_READY, the pairing
// page or `lmnt ready`) that the bed is clear; the next job may start.
func (e *Engine) ConfirmBedClear() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A print on the bed makes the confirmation false, and its end would
	// discard it anyway: the owner confirms after removing the print.
	if ps := e.status.PrintState; e.status.Connected && (ps == "printing" || ps == "paused") {
		return ErrPrintRunning
	}
	if a := e.active; a != nil && e.recs[a.id] != nil && e.recs[a.id].State.handedOff() {
		return ErrPrintRunning
	}
	return e.confirmBedLocked()
}

// ErrPrintRunning refuses a bed-clear confirmation during a print.
var ErrPrintRunning = errors.New("a print is running: confirm the bed is clear after it has finished and you removed it")

// confirmBedLocked takes the confirmation even when it cannot be written
// yet: it is retried with the journal (diskfull.go), no job starts before
// it is on disk, and a restart before then asks the owner again.
func (e *Engine) confirmBedLocked() error {
	e.bed = bedState{Clear: true, At: e.clock.Now()}
	e.broadcastLocked()
	e.kick()
	if err := e.saveBedLocked(); err != nil {
		return fmt.Errorf("jobs: bed-clear confirmation taken, not yet saved (retrying): %w", err)
	}
	return nil
}

// JobInfo is one job as the engine reports it. No secrets. The API sends
// apitype.JobInfo (daemon/wire.go converts).
type JobInfo struct {
	ID       string
	Name     string
	Local    bool
	State    State
	Message  string
	Progress float64
	Created  time.Time
	Updated  time.Time
	// PendingReports counts status reports not yet delivered.
	PendingReports int
	// ProgressUnknown: the job is in Klipper but the bridge is down (or
	// not yet back after a restart), so Progress is only the last known.
	ProgressUnknown bool
}

// Snapshot is the engine's state; the API sends apitype.Snapshot.
type Snapshot struct {
	Active   *JobInfo
	Queue    []JobInfo // accepted jobs, in start order
	Finished []JobInfo // newest first, at most 50
	// Waiting says why the queue is not moving ("" when it is).
	Waiting   string
	BedClear  bool
	AutoStart bool
	// JournalProblem says why the job journal cannot be written ("state
	// disk full: …"), "" when it can.
	JournalProblem string
}

// Snapshot returns the jobs and the queue as they are now.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{BedClear: e.bed.Clear, AutoStart: e.o.AutoStart, Queue: []JobInfo{}, Finished: []JobInfo{},
		JournalProblem: e.journalProblemLocked()}
	for _, r := range e.recs {
		info := JobInfo{ID: r.ID, Name: r.Name, Local: r.Local, State: r.State, Message: r.Message,
			Progress: r.Progress, Created: r.Created, Updated: r.Updated, PendingReports: len(r.Pending),
			ProgressUnknown: r.State.handedOff() && (!e.status.Connected || e.active == nil || e.active.id != r.ID || e.active.lostConn)}
		switch {
		case r.State == Accepted:
			s.Queue = append(s.Queue, info)
		case r.State.Terminal():
			s.Finished = append(s.Finished, info)
		default:
			s.Active = &info
		}
	}
	sort.Slice(s.Queue, func(i, j int) bool {
		a, b := s.Queue[i], s.Queue[j]
		return a.Created.Before(b.Created) || a.Created.Equal(b.Created) && a.ID < b.ID
	})
	sort.Slice(s.Finished, func(i, j int) bool { return s.Finished[i].Updated.After(s.Finished[j].Updated) })
	if len(s.Finished) > 50 {
		s.Finished = s.Finished[:50]
	}
	switch {
	case len(e.recovering) > 0:
		s.Waiting = "Waiting for Klipper to report on the print that was running before lmntd restarted"
	case s.Active == nil && len(s.Queue) > 0:
		s.Waiting = e.blockedLocked()
	}
	return s
}

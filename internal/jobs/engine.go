package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// Options configure an Engine. Zero durations take the defaults shown.
type Options struct {
	// StateDir holds the journal (jobs/) and the bed-clear state.
	StateDir    string
	Marketplace Marketplace // nil: local jobs only
	Decryptor   Decryptor
	Printer     Printer
	Clock       clock.Clock  // nil: clock.System
	Logger      *slog.Logger // nil: discard

	// AutoStart skips the bed-clear confirmation (farms with automatic
	// part removal).
	AutoStart bool
	// Check, when set, vets each decrypted job before the hand-off.
	Check FitCheck
	// RequestPoll, when set, asks the marketplace poller for a poll now
	// (after a restart, for jobs whose keys only a poll can bring back).
	RequestPoll func()
	// Stubs, when set, gets each job's metadata stub (stubs.go); KeepStubs
	// leaves finished jobs' stubs for the print history's thumbnails.
	Stubs     StubStore
	KeepStubs bool
	StubGrace time.Duration // 30 s: a finished job's stub stays this long

	HeartbeatInterval time.Duration // 30 s: "Printing: NN.N%" while printing
	RecoveryWait      time.Duration // 45 s: wait for Klipper after a restart
	ReconnectGrace    time.Duration // 10 s: a print survives a bridge reconnect
	StartTimeout      time.Duration // 60 s: Klipper must show the print started
	HandOffTimeout    time.Duration // 30 s: Printer.Print must answer
	RetryMin          time.Duration // 5 s: outbox backoff, doubling…
	RetryMax          time.Duration // 5 min: …up to this
	SendTimeout       time.Duration // 30 s: one status report attempt
	KeepFinished      int           // 1000 finished jobs kept in the journal

	// OnTransition, when set, is told of every journaled state change. It
	// is called with the engine locked: it must return at once and never
	// call the engine (the daemon counts metrics with it).
	OnTransition func(Transition)

	// LocalLimits, when set, returns the caps on local uploads held in
	// memory: how many and how many bytes in total (local.go has the
	// defaults). It is asked at each submission, so a reload applies.
	LocalLimits func() (jobs int, bytes int64)
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HeartbeatInterval, 30*time.Second)
	def(&o.RecoveryWait, 45*time.Second)
	def(&o.ReconnectGrace, 10*time.Second)
	def(&o.StartTimeout, 60*time.Second)
	def(&o.HandOffTimeout, 30*time.Second)
	def(&o.RetryMin, 5*time.Second)
	def(&o.RetryMax, 5*time.Minute)
	def(&o.SendTimeout, 30*time.Second)
	def(&o.StubGrace, defaultStubGrace)
	if o.KeepFinished <= 0 {
		o.KeepFinished = 1000
	}
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrJobGone is what Marketplace.Job wraps when the marketplace no longer
// offers a job (so its keys cannot be fetched again).
var ErrJobGone = errors.New("jobs: the marketplace no longer offers this job")

// Refetcher is optionally implemented by a Marketplace: it fetches a job's
// download URL and keys again (from a poll or the job details) for a job
// the journal knows but whose keys were lost in a restart.
type Refetcher interface {
	Job(ctx context.Context, jobID string) (Offer, error)
}

// Engine runs jobs. Create it with New, then Run it; its other methods are
// safe for concurrent use.
type Engine struct {
	o     Options
	log   *slog.Logger
	clock clock.Clock
	st    *store

	mu        sync.Mutex
	recs      map[string]*record
	offers    map[string]Offer    // remote jobs' key material, memory only
	locals    map[string]LocalJob // local jobs' bodies, memory only
	notBefore map[string]time.Time
	bed       bedState
	status    PrinterStatus
	active    *activeJob
	// recovering lists jobs the journal shows handed to Klipper before a
	// restart; nothing new starts until Klipper has told what became of them.
	recovering  []string
	changed     chan struct{}
	running     bool
	bedWaitSaid bool
	// printSeen: Klipper showed a print in progress (ours or the owner's
	// own) that has not been seen ending yet.
	printSeen bool
	// localFailures: when local jobs failed verification, oldest first,
	// within the rate limit's window (verify.go).
	localFailures []time.Time
	// unsaved: records whose latest state is not on disk yet, because the
	// journal could not be written (diskErr); flushTimer retries them
	// (diskfull.go).
	unsaved       map[string]bool
	bedUnsaved    bool // e.bed is not on disk yet (diskfull.go)
	diskErr       error
	flushTimer    clock.Timer
	flushAttempts int

	wake       chan struct{}
	outboxWake chan struct{}
	prepDone   chan prepResult
	consoleQ   chan string

	// Timers, used by the loop goroutine only.
	hbTimer, graceTimer, startTimer, recoveryTimer, retryTimer clock.Timer
}

// activeJob is the one job past accepted and not yet finished.
type activeJob struct {
	id           string
	prepCancel   context.CancelFunc
	prepared     *Prepared
	handed       bool   // journaled as printing: never to be printed again
	session      string // the bridge connection the print was handed over
	started      bool   // Klipper showed our file printing or beyond
	lostConn     bool   // the bridge dropped during the print
	cancelReason string
	// localHeld: the job's uploaded body is still open (being decrypted);
	// localSize is its size, counted against the local queue's cap.
	localHeld bool
	localSize int64
}

// New opens the journal in o.StateDir and returns an engine ready to Run.
func New(o Options) (*Engine, error) {
	o.setDefaults()
	if o.Decryptor == nil || o.Printer == nil {
		return nil, errors.New("jobs: Decryptor and Printer are required")
	}
	st, recs, err := openStore(o.StateDir, o.Logger)
	if err != nil {
		return nil, err
	}
	bed, err := loadBed(o.StateDir)
	if err != nil {
		o.Logger.Warn("bed-clear state", "err", err)
	}
	e := &Engine{
		o: o, log: o.Logger, clock: o.Clock, st: st,
		recs: recs, offers: map[string]Offer{}, locals: map[string]LocalJob{},
		notBefore: map[string]time.Time{}, bed: bed, unsaved: map[string]bool{},
		changed:    make(chan struct{}),
		wake:       make(chan struct{}, 1),
		outboxWake: make(chan struct{}, 1),
		prepDone:   make(chan prepResult, 1),
		consoleQ:   make(chan string, 32),
	}
	// Before anything new can be submitted: what is in the journal now
	// is what the previous run left.
	e.mu.Lock()
	e.quarantineLocked()
	e.recoverLocked()
	e.cleanStubsLocked()
	e.seedLocalFailuresLocked()
	e.mu.Unlock()
	return e, nil
}

// Run reconciles the jobs the last run handed to Klipper, then runs the queue
// and the outbox until ctx ends. A print in progress is left to Klipper; the
// next run reconciles it.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("jobs: engine already running")
	}
	e.running = true
	e.mu.Unlock()

	updates, unsubscribe := e.o.Printer.Subscribe()
	defer unsubscribe()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.runConsole(ctx) }()
	if e.o.Marketplace != nil {
		wg.Add(1)
		go func() { defer wg.Done(); e.runOutbox(ctx) }()
	}
	e.mu.Lock()
	e.status = e.o.Printer.Status()
	e.followBedLocked(PrinterStatus{}, e.status)
	if len(e.recovering) > 0 {
		e.recoveryTimer = e.clock.NewTimer(e.o.RecoveryWait)
	}
	if e.o.RequestPoll != nil {
		for _, r := range e.recs {
			if r.State == Accepted && !r.Local {
				// Keys lost in the restart come back with a poll.
				e.o.RequestPoll()
				break
			}
		}
	}
	e.mu.Unlock()

	e.loop(ctx, updates)
	wg.Wait()
	return nil
}

func timerC(t clock.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C()
}

func stopTimer(t *clock.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

func (e *Engine) loop(ctx context.Context, updates <-chan struct{}) {
	for {
		e.step(ctx)
		select {
		case <-ctx.Done():
			e.shutdown()
			return
		case <-e.wake:
		case _, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			e.onStatus(e.o.Printer.Status())
		case res := <-e.prepDone:
			e.onPrepared(ctx, res)
		case <-timerC(e.hbTimer):
			e.hbTimer = nil
			e.onHeartbeat()
		case <-timerC(e.graceTimer):
			e.graceTimer = nil
			e.mu.Lock()
			e.finishActiveLocked(Failed, fmt.Sprintf("Lost the connection to Klipper during the print; it did not come back within %s", e.o.ReconnectGrace), false)
			e.mu.Unlock()
		case <-timerC(e.startTimer):
			e.startTimer = nil
			e.mu.Lock()
			if a := e.active; a != nil && a.handed && !a.started {
				e.finishActiveLocked(Failed, fmt.Sprintf("Klipper accepted the file but did not start printing it within %s", e.o.StartTimeout), true)
			}
			e.mu.Unlock()
		case <-timerC(e.recoveryTimer):
			e.recoveryTimer = nil
			e.mu.Lock()
			e.resolveRecoveryLocked()
			e.mu.Unlock()
		case <-timerC(e.retryTimer):
			e.retryTimer = nil
		case <-timerC(e.flushTimer):
			e.mu.Lock()
			e.flushTimer = nil
			e.flushLocked()
			e.mu.Unlock()
		}
	}
}

// shutdown stops work in progress without journaling anything: a job being
// downloaded is fetched again after the restart, a print goes on in Klipper.
func (e *Engine) shutdown() {
	e.mu.Lock()
	a := e.active
	e.mu.Unlock()
	if a != nil && !a.handed && a.prepCancel != nil {
		a.prepCancel()
		if a.prepared == nil {
			res := <-e.prepDone
			if res.prepared != nil {
				_ = res.prepared.File.Close()
			}
		}
	}
	if a != nil && a.prepared != nil {
		_ = a.prepared.File.Close()
	}
	e.mu.Lock()
	for id := range e.locals {
		e.releaseLocalLocked(id)
	}
	e.mu.Unlock()
	for _, t := range []*clock.Timer{&e.hbTimer, &e.graceTimer, &e.startTimer, &e.recoveryTimer, &e.retryTimer, &e.flushTimer} {
		stopTimer(t)
	}
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) kickOutbox() {
	select {
	case e.outboxWake <- struct{}{}:
	default:
	}
}

// broadcastLocked wakes everyone waiting on Updated.
func (e *Engine) broadcastLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *Engine) console(text string) {
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	select {
	case e.consoleQ <- "LMNT: " + text:
	default: // the console is informational; never block the engine on it
	}
}

func (e *Engine) runConsole(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case line := <-e.consoleQ:
			if err := e.o.Printer.Console(line); err != nil {
				e.log.Debug("console line not shown", "err", err)
			}
		}
	}
}

// transition journals r's move to state to, with rep queued in the same
// write (remote jobs only). Nothing may act on the new state unless it
// returns nil.
func (e *Engine) transition(r *record, to State, msg string, rep *Report) error {
	msg = redact.Message(msg)
	r.Seq++
	r.State = to
	r.Message = msg
	r.Updated = e.clock.Now()
	if rep != nil && !r.Local && e.o.Marketplace != nil {
		e.queueReportLocked(r, *rep, false)
	}
	e.broadcastLocked()
	if err := e.saveLocked(r); err != nil {
		e.log.Warn("journal write failed", "job", r.ID, "state", to, "err", err)
		return err
	}
	level := slog.LevelInfo
	if to == Failed {
		level = slog.LevelWarn // journalctl -p warning lists failed jobs
	}
	e.log.Log(context.Background(), level, "job state", "job", r.ID, "state", to, "message", msg)
	if e.o.OnTransition != nil {
		e.o.OnTransition(Transition{ID: r.ID, Local: r.Local, To: to, At: r.Updated})
	}
	if rep != nil {
		e.kickOutbox()
	}
	return nil
}

// progressLocked shows a job's progress in its message and, for a remote
// job, reports it to the marketplace as a report the next one supersedes
// (heartbeats, download progress). Nothing is journaled as a transition.
func (e *Engine) progressLocked(r *record, status, msg string) {
	r.Message = msg
	if !r.Local && e.o.Marketplace != nil {
		e.queueReportLocked(r, Report{Status: status, Message: msg}, true)
		_ = e.saveLocked(r) // unsaved: retried
		e.kickOutbox()
	}
	e.broadcastLocked()
}

// step starts the next queued job when nothing is active and the printer
// is ready for it.
func (e *Engine) step(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.armFlushLocked()
	if e.active != nil || len(e.recovering) > 0 || ctx.Err() != nil {
		return
	}
	now := e.clock.Now()
	r, wakeAt := e.nextQueuedLocked(now)
	if r == nil {
		if !wakeAt.IsZero() && e.retryTimer == nil {
			e.retryTimer = e.clock.NewTimer(wakeAt.Sub(now))
		}
		return
	}
	if reason := e.blockedLocked(); reason != "" {
		if reason == bedWaitReason && !e.bedWaitSaid {
			// Said once per wait, to the owner at the printer and, in
			// the job's message, to whoever follows the job.
			e.bedWaitSaid = true
			e.console("waiting for LMNT_READY: is the bed clear?")
			if err := e.transition(r, Accepted, reason, &Report{Status: jobstatus.Processing, Message: reason}); err != nil {
				e.log.Error("journal", "err", err)
			}
		}
		return
	}
	if ok, until := e.localFailuresLocked(now); r.Local && !ok {
		e.endLocked(r, Failed, tooManyFailures(until).Error())
		e.kick()
		return
	}
	a := &activeJob{id: r.ID}
	prior := snapshotRecord(r)
	if err := e.transition(r, Downloading, prepVerb(r), &Report{Status: jobstatus.Processing, Message: "Downloading"}); err != nil {
		undoLocked(r, prior) // it waits for the journal (blockedLocked)
		return
	}
	offer, haveOffer := e.offers[r.ID]
	local := e.locals[r.ID]
	delete(e.locals, r.ID) // a local body is read once
	a.localHeld, a.localSize = r.Local, max(local.Size, 0)
	pctx, cancel := context.WithCancel(ctx)
	a.prepCancel = cancel
	e.active = a
	e.console(strings.ToLower(prepVerb(r)) + " " + displayName(r))
	go e.prepare(pctx, r.ID, r.Local, offer, haveOffer, local)
}

// nextQueuedLocked picks the oldest accepted job that may start now, or
// says when a held-back one may.
func (e *Engine) nextQueuedLocked(now time.Time) (*record, time.Time) {
	var best *record
	var wakeAt time.Time
	for _, r := range e.recs {
		if r.State != Accepted {
			continue
		}
		if nb, ok := e.notBefore[r.ID]; ok && nb.After(now) {
			if wakeAt.IsZero() || nb.Before(wakeAt) {
				wakeAt = nb
			}
			continue
		}
		if best == nil || r.Created.Before(best.Created) || r.Created.Equal(best.Created) && r.ID < best.ID {
			best = r
		}
	}
	return best, wakeAt
}

// blockedLocked says why no job can start now, or "" when one can.
func (e *Engine) blockedLocked() string {
	st := e.status
	switch {
	case e.diskErr != nil:
		return "Waiting for the job journal to be writable (" + journalProblem(e.diskErr) + ")"
	case !st.Connected:
		return "Waiting for Klipper to connect"
	case st.Klippy != "ready":
		msg := "Waiting for Klipper to be ready (" + st.Klippy + ")"
		if st.KlippyMessage != "" {
			msg += ": " + firstLine(st.KlippyMessage)
		}
		return msg
	case st.PrintState == "printing" || st.PrintState == "paused" || st.SDActive:
		return "Waiting for the current print to finish"
	case !e.o.AutoStart && !e.bed.Clear:
		return bedWaitReason
	}
	return ""
}

// bedWaitReason is why a job waits after a print ended, until the owner
// confirms the bed is clear (LMNT_READY in Klipper, the pairing page, or
// `lmnt ready`).
const bedWaitReason = "Waiting for the owner to confirm the bed is clear (LMNT_READY)"

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// displayName is how console lines name a job. The extra drops any line
// with a run of 20 or more token-like characters (its secret filter), so an
// id that long is shortened to its ends: enough to recognise it in
// `lmnt jobs` or the marketplace.
func displayName(r *record) string {
	id := r.ID
	if len(id) >= 20 { // ids are ASCII (validID)
		id = id[:8] + "…" + id[len(id)-4:]
	}
	if r.Name != "" {
		return r.Name + " (" + id + ")"
	}
	return id
}

// finishActiveLocked ends the active job in a terminal state, closes its
// memfd and, when it reached Klipper, resets the bed-clear confirmation.
func (e *Engine) finishActiveLocked(to State, msg string, cancelPrint bool) {
	a := e.active
	if a == nil {
		return
	}
	r := e.recs[a.id]
	e.endLocked(r, to, msg)
	if a.prepared != nil {
		if err := a.prepared.File.Close(); err != nil {
			e.log.Warn("closing the job's memfd", "job", a.id, "err", err)
		}
		a.prepared = nil
	}
	if cancelPrint {
		go e.cancelInKlipper(a.id, msg)
	}
	stopTimer(&e.hbTimer)
	stopTimer(&e.graceTimer)
	stopTimer(&e.startTimer)
	if a.handed {
		e.printEndedLocked()
	}
	e.active = nil
	e.kick()
}

// endLocked journals a terminal state with its one terminal report.
func (e *Engine) endLocked(r *record, to State, msg string) {
	rep := &Report{Status: jobstatus.Failure, Message: redact.Message(msg)}
	if to == Succeeded {
		st := e.status
		rep = &Report{Status: jobstatus.Success, Message: msg,
			FilamentUsed: ptr(st.FilamentUsed), PrintDuration: ptr(st.PrintDuration), TotalDuration: ptr(st.TotalDuration)}
	}
	if err := e.transition(r, to, msg, rep); err != nil {
		e.log.Error("could not journal the end of a job", "job", r.ID, "err", err)
	}
	delete(e.offers, r.ID)
	e.releaseLocalLocked(r.ID)
	delete(e.notBefore, r.ID)
	e.stubEndedLocked(r)
	verb := map[State]string{Succeeded: "finished", Failed: "failed", Cancelled: "cancelled"}[to]
	e.console(verb + " " + displayName(r) + ": " + msg)
	e.st.prune(e.recs, e.o.KeepFinished)
}

func ptr(f float64) *float64 { return &f }

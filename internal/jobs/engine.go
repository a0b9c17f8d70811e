package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
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
	Check CompatibilityCheck
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

type prepResult struct {
	id       string
	prepared *Prepared
	err      error
	// transient: a refetch failed for a reason that may pass; requeue.
	transient bool
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

// recoverLocked turns the journal left by a previous run into the starting
// state: jobs not yet handed to Klipper are queued again (remote) or failed
// (local: their body is gone); handed-off jobs wait for Klipper's word.
func (e *Engine) recoverLocked() {
	ids := make([]string, 0, len(e.recs))
	for id := range e.recs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := e.recs[id]
		switch {
		case r.State.Terminal() || r.State == Accepted && !r.Local:
		case r.State.handedOff():
			e.log.Info("reconciling job handed to Klipper before the restart", "job", id, "state", r.State)
			e.recovering = append(e.recovering, id)
		case r.Local:
			_ = e.transition(r, Failed, "lmntd restarted before the local job started; submit it again", nil)
		default: // downloading or ready: never reached Klipper, safe to fetch again
			_ = e.transition(r, Accepted, "Queued again after lmntd restarted", nil)
		}
	}
	e.st.prune(e.recs, e.o.KeepFinished)
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

// Updated returns a channel closed at the next change of any job, the
// queue or the bed state: API long-polls and tests wait on it.
func (e *Engine) Updated() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
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
// prepVerb names the preparation step: a local job is read from the
// owner's upload, never downloaded (and may not be encrypted at all).
func prepVerb(r *record) string {
	if r.Local {
		return "Checking"
	}
	return "Downloading"
}

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

// prepare downloads (or opens) and decrypts one job into a sealed memfd on
// a low-priority thread, and hands the result to the loop.
func (e *Engine) prepare(ctx context.Context, id string, local bool, offer Offer, haveOffer bool, lj LocalJob) {
	res := runLowPriority(e.log, func() prepResult {
		var body io.ReadCloser
		var keys KeyMaterial
		var err error
		switch {
		case local:
			if lj.Open == nil {
				return prepResult{id: id, err: errors.New("the local job's file is no longer available")}
			}
			keys = lj.Keys
			if body, err = lj.Open(ctx); err != nil {
				return prepResult{id: id, err: fmt.Errorf("could not read the uploaded file: %w", err)}
			}
		default:
			if !haveOffer {
				rf, ok := e.o.Marketplace.(Refetcher)
				if !ok {
					return prepResult{id: id, err: errors.New("the job's keys were lost in a restart and cannot be fetched again")}
				}
				if offer, err = rf.Job(ctx, id); err != nil {
					return prepResult{id: id, err: fmt.Errorf("could not fetch the job again after a restart: %w", err), transient: !errors.Is(err, ErrJobGone)}
				}
			}
			if offer.Keys.DEKPackage == "" {
				return prepResult{id: id, err: ErrPlaintextOffer}
			}
			keys = offer.Keys
			if body, err = e.o.Marketplace.Download(ctx, offer); err != nil {
				return prepResult{id: id, err: fmt.Errorf("Download failed: %w", err)}
			}
		}
		defer body.Close()
		var in io.Reader = body
		if sb, ok := body.(SizedBody); ok && sb.Size() > 0 {
			in = &progressReader{r: body, total: sb.Size(), report: func(percent int) { e.downloadProgress(id, percent) }}
		}
		p, err := e.o.Decryptor.Prepare(ctx, id, in, keys)
		if err != nil {
			return prepResult{id: id, err: errors.New(e.prepareFailure(id, err))}
		}
		return prepResult{id: id, prepared: p}
	})
	e.prepDone <- res
}

// progressReader calls report with the percentage read each time another
// tenth of total has been read (10 % … 90 %; the end is reported by the
// job's next state).
type progressReader struct {
	r      io.Reader
	total  int64
	read   int64
	tenths int64
	report func(percent int)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	done := min(p.read, p.total)
	if t := done * 10 / p.total; t > p.tenths && t < 10 {
		p.tenths = t
		p.report(int(done * 100 / p.total))
	}
	return n, err
}

// downloadProgress shows a job's download (and, in the same stream,
// decryption) progress: on Klipper's console, in its message and, as a
// processing report that a newer one supersedes like a heartbeat, to the
// marketplace.
func (e *Engine) downloadProgress(id string, percent int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, r := e.active, e.recs[id]
	if a == nil || a.id != id || r == nil || r.State != Downloading {
		return
	}
	msg := fmt.Sprintf("%s: %d%%", prepVerb(r), percent)
	r.Message = msg
	if !r.Local && e.o.Marketplace != nil {
		e.queueReportLocked(r, Report{Status: jobstatus.Processing, Message: msg}, true)
		_ = e.saveLocked(r) // unsaved: retried
		e.kickOutbox()
	}
	e.broadcastLocked()
	e.console(fmt.Sprintf("%s %s: %d%%", strings.ToLower(prepVerb(r)), displayName(r), percent))
}

// onPrepared continues a job whose file is ready (or failed): compatibility
// check, readiness re-check, journal, hand-off.
func (e *Engine) onPrepared(ctx context.Context, res prepResult) {
	e.mu.Lock()
	a := e.active
	if a == nil || a.id != res.id {
		e.mu.Unlock()
		if res.prepared != nil {
			_ = res.prepared.File.Close()
		}
		return
	}
	a.prepCancel()
	a.prepared = res.prepared
	a.localHeld = false // prepare has closed the body
	r := e.recs[a.id]
	switch {
	case a.cancelReason != "":
		e.finishActiveLocked(Cancelled, "Cancelled: "+a.cancelReason, false)
		e.mu.Unlock()
		return
	case res.err != nil && res.transient:
		e.notBefore[r.ID] = e.clock.Now().Add(e.o.RetryMax)
		if err := e.transition(r, Accepted, res.err.Error()+"; will retry", nil); err != nil {
			e.log.Error("journal", "err", err)
		}
		e.active = nil
		e.mu.Unlock()
		return
	case res.err != nil:
		if r.Local && isVerificationFailure(res.err.Error()) {
			e.localFailures = append(e.localFailures, e.clock.Now())
		}
		e.finishActiveLocked(Failed, res.err.Error(), false)
		e.mu.Unlock()
		return
	}
	prior := snapshotRecord(r)
	readyMsg := "Decrypted and checked"
	if r.Local {
		readyMsg = "Checked" // a local file may not have been encrypted at all
	}
	if err := e.transition(r, Ready, readyMsg, nil); err != nil {
		e.requeueUnjournaledLocked(a, r, prior)
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()

	var checkErr error
	if e.o.Check != nil {
		checkErr = e.o.Check(ctx, res.id, res.prepared.Metadata)
	}
	stub := e.buildStub(res.id, res.prepared)

	e.mu.Lock()
	if checkErr != nil {
		e.finishActiveLocked(Failed, "Not compatible with this printer: "+checkErr.Error(), false)
		e.mu.Unlock()
		return
	}
	if a.cancelReason != "" {
		e.finishActiveLocked(Cancelled, "Cancelled: "+a.cancelReason, false)
		e.mu.Unlock()
		return
	}
	if reason := e.blockedLocked(); reason != "" {
		// The plaintext must not wait around for the printer: drop it
		// and fetch again when the printer is ready.
		_ = a.prepared.File.Close()
		e.active = nil
		_ = e.transition(r, Accepted, "The printer became unavailable before the print started; queued again", nil)
		e.mu.Unlock()
		return
	}
	prior = snapshotRecord(r)
	e.reserveStubLocked(r, stub)
	if err := e.transition(r, Printing, "Printing: 0.0%", &Report{Status: jobstatus.Printing, Message: "Printing: 0.0%"}); err != nil {
		e.requeueUnjournaledLocked(a, r, prior)
		e.mu.Unlock()
		return
	}
	a.handed = true
	// Armed together with the journaled hand-off, so a heartbeat is due
	// 30 s after anyone can see the job printing.
	e.hbTimer = e.clock.NewTimer(e.o.HeartbeatInterval)
	e.startTimer = e.clock.NewTimer(e.o.StartTimeout)
	delete(e.offers, r.ID)
	req := PrintRequest{JobID: r.ID, Name: VirtualName(r.ID), Size: res.prepared.Size, Metadata: res.prepared.Metadata}
	name := displayName(r)
	printName, title := r.PrintName, r.Name
	e.mu.Unlock()

	req.Filename, req.Title = e.writeStub(r.ID, printName, stub), title
	before := e.o.Printer.Status().Session
	hctx, cancel := context.WithTimeout(ctx, e.o.HandOffTimeout)
	err := e.o.Printer.Print(hctx, req, res.prepared.File)
	cancel()

	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ErrHandOffUncertain)) {
		// lmntd is stopping (the wait was cancelled, or the bridge closed
		// with it), not Klipper refusing: the job stays handed off in the
		// journal and the next start reconciles it with Klipper's status
		// (shutdown closes the memfd).
		e.log.Info("stopping while Klipper had not answered the hand-off; the next start asks Klipper what became of it", "job", r.ID)
		return
	}
	e.status = e.o.Printer.Status()
	// The print went over the connection of before. monitorLocked counts
	// a status of another connection, or none, as a lost connection: only
	// a status of the new connection showing the print proves it survived.
	a.session = before
	switch {
	case errors.Is(err, ErrHandOffUncertain):
		// Klipper's status decides: a connection that stayed up (the
		// answer was late) shows the print, or the start timeout ends it;
		// its current status may predate the print packet, so it proves
		// nothing lost. A dropped or replaced connection is a lost one.
		e.log.Warn("hand-off interrupted; waiting for Klipper's status to tell whether it is printing", "job", r.ID, "err", err)
	case err != nil:
		e.finishActiveLocked(Failed, "Klipper did not accept the print: "+err.Error(), false)
		return
	case e.status.Session == before:
		e.console("started " + name)
	}
	if a.cancelReason != "" {
		go e.cancelInKlipper(r.ID, a.cancelReason)
	}
	e.monitorLocked(e.status)
}

func (e *Engine) cancelInKlipper(id, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), e.o.HandOffTimeout)
	defer cancel()
	if err := e.o.Printer.Cancel(ctx, id, reason); err != nil {
		e.log.Warn("cancel in Klipper", "job", id, "err", err)
	}
}

func (e *Engine) onStatus(st PrinterStatus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := e.status
	e.status = st
	if len(e.recovering) > 0 && st.Connected {
		e.resolveRecoveryLocked()
	}
	e.monitorLocked(st)
	e.followBedLocked(prev, st)
	e.broadcastLocked()
}

// followBedLocked keeps the bed-clear state in step with Klipper. Any print
// that ends, ours or one the owner started in Klipper, leaves the bed
// occupied. The extra's ready_confirmed (LMNT_READY, remembered by the
// extra while lmntd was not connected and cleared when a print starts)
// confirms it clear when it turns true.
func (e *Engine) followBedLocked(prev, st PrinterStatus) {
	if !st.Connected {
		return // an unknown state ends nothing; the next status tells
	}
	running := st.PrintState == "printing" || st.PrintState == "paused"
	switch st.PrintState {
	case "printing", "paused":
		e.printSeen = true
	case "complete", "cancelled", "error":
		// A short print can start and end between two statuses: a new
		// end state within one connection is a print that ended too. A
		// new connection's first status only repeats what Klipper
		// showed before (possibly to a previous run of lmntd).
		sameSession := prev.Connected && prev.Session == st.Session
		if e.printSeen || sameSession && (prev.PrintState != st.PrintState || prev.Filename != st.Filename) {
			e.printEndedLocked()
		}
		e.printSeen = false
	default: // standby: a print seen running was reset, or Klipper restarted
		if e.printSeen {
			e.printEndedLocked()
		}
		e.printSeen = false
	}
	turnedTrue := !prev.Connected || prev.Session != st.Session || !prev.ReadyConfirmed
	if st.ReadyConfirmed && turnedTrue && !running && !e.bed.Clear {
		if err := e.confirmBedLocked(); err != nil {
			e.log.Error("bed-clear confirmation from Klipper", "err", err)
		} else {
			e.log.Info("bed confirmed clear in Klipper (LMNT_READY)")
		}
	}
}

// monitorLocked follows the active print through Klipper's status.
func (e *Engine) monitorLocked(st PrinterStatus) {
	a := e.active
	if a == nil || !a.handed {
		return
	}
	r := e.recs[a.id]
	if !st.Connected {
		if !a.lostConn {
			a.lostConn = true
			e.log.Warn("Klipper bridge disconnected during the print", "job", a.id)
		}
		if e.graceTimer == nil {
			e.graceTimer = e.clock.NewTimer(e.o.ReconnectGrace)
			r.Message = fmt.Sprintf("Lost the connection to Klipper; waiting up to %s for it to come back", e.o.ReconnectGrace)
			e.broadcastLocked()
		}
		return
	}
	stopTimer(&e.graceTimer)
	if st.Session != a.session {
		// A new bridge connection, possibly without this engine having
		// seen the old one drop (the signals coalesce).
		a.lostConn = true
		a.session = st.Session
	}
	ours := e.printsJob(a.id, st.Filename)
	if ours && st.PrintState == "complete" {
		r.Progress = 1
		e.finishActiveLocked(Succeeded, "Print complete", false)
		return
	}
	switch st.Klippy {
	case "shutdown", "error":
		msg := "Klipper shut down during the print"
		if st.KlippyMessage != "" {
			msg += ": " + firstLine(st.KlippyMessage)
		}
		e.finishActiveLocked(Failed, msg, false)
		return
	case "startup":
		e.finishActiveLocked(Failed, "Klipper restarted during the print", false)
		return
	}
	if !ours {
		switch {
		case a.lostConn:
			e.finishActiveLocked(Failed, "Klipper disconnected during the print (restart or firmware restart); the print is gone", false)
		case a.started:
			e.finishActiveLocked(Failed, fmt.Sprintf("Klipper stopped the print without finishing it (now %q, %s)", st.Filename, st.PrintState), false)
		}
		return
	}
	r.Progress = st.Progress
	if a.lostConn && (st.PrintState == "printing" || st.PrintState == "paused") {
		// A status of this connection shows the print going on: it
		// survived the lost connection. Progress and heartbeats resume.
		a.lostConn = false
		e.log.Info("Klipper is back and the print goes on", "job", a.id)
		if r.State == Printing {
			r.Message = progressMessage(st.Progress)
		} else {
			r.Message = "Paused"
		}
	}
	switch st.PrintState {
	case "printing":
		a.started = true
		stopTimer(&e.startTimer)
		if r.State == Paused {
			_ = e.transition(r, Printing, "Resumed", &Report{Status: jobstatus.Printing, Message: progressMessage(st.Progress)})
		}
	case "paused":
		a.started = true
		stopTimer(&e.startTimer)
		if r.State == Printing {
			msg := "Paused"
			if st.PrintMessage != "" {
				msg += ": " + firstLine(st.PrintMessage)
			}
			_ = e.transition(r, Paused, msg, &Report{Status: jobstatus.Paused, Message: msg})
		}
	case "cancelled":
		msg := "Cancelled on the printer"
		if a.cancelReason != "" {
			msg = "Cancelled: " + a.cancelReason
		}
		e.finishActiveLocked(Cancelled, msg, false)
	case "error":
		msg := "Klipper reported an error"
		if st.PrintMessage != "" {
			msg += ": " + firstLine(st.PrintMessage)
		}
		e.finishActiveLocked(Failed, msg, false)
	default: // standby: loaded but not yet started, or reset
		if a.started {
			e.finishActiveLocked(Failed, "The print was reset in Klipper before it finished", false)
		}
	}
}

func progressMessage(p float64) string {
	return fmt.Sprintf("Printing: %.1f%%", 100*p)
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

// printEndedLocked: a print of ours left the bed occupied (whatever its
// outcome); the next job waits for the owner's confirmation.
func (e *Engine) printEndedLocked() {
	if e.o.AutoStart {
		return
	}
	e.bedWaitSaid = false
	if !e.bed.Clear {
		return // already waiting for a confirmation
	}
	e.bed = bedState{Clear: false, At: e.clock.Now()}
	e.broadcastLocked()
	_ = e.saveBedLocked() // unsaved: retried, and nothing starts meanwhile
}

// resolveRecoveryLocked decides what became of the jobs handed to Klipper
// before a restart, from Klipper's status (or its silence).
func (e *Engine) resolveRecoveryLocked() {
	st := e.status
	stopTimer(&e.recoveryTimer)
	ids := e.recovering
	e.recovering = nil
	for _, id := range ids {
		r := e.recs[id]
		switch {
		case !st.Connected:
			e.endLocked(r, Failed, lostMessage(r, fmt.Sprintf("Klipper did not reconnect within %s after lmntd restarted; the print's outcome is unknown", e.o.RecoveryWait)))
			e.printEndedLocked()
		case e.printsJob(id, st.Filename) && e.active == nil:
			e.log.Info("Klipper still knows the job", "job", id, "print_state", st.PrintState)
			e.active = &activeJob{id: id, handed: true, started: true, session: st.Session}
			if r.State.handedOff() {
				e.hbTimer = e.clock.NewTimer(e.o.HeartbeatInterval)
			}
			e.monitorLocked(st)
		default:
			e.endLocked(r, Failed, lostMessage(r, fmt.Sprintf("The print was lost while lmntd was not running (Klipper now shows %q, %s)", st.Filename, st.PrintState)))
			e.printEndedLocked()
		}
	}
	e.kick()
}

func (e *Engine) onHeartbeat() {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.active
	if a == nil || !a.handed {
		return
	}
	r := e.recs[a.id]
	if r.State == Printing && !a.lostConn {
		msg := progressMessage(r.Progress)
		r.Message = msg
		if !r.Local && e.o.Marketplace != nil {
			e.queueReportLocked(r, Report{Status: jobstatus.Printing, Message: msg}, true)
			_ = e.saveLocked(r) // unsaved: retried
			e.kickOutbox()
		}
		e.broadcastLocked()
	}
	e.hbTimer = e.clock.NewTimer(e.o.HeartbeatInterval)
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

// JobInfo is one job as the API and CLI show it. No secrets.
type JobInfo struct {
	ID       string    `json:"id"`
	Name     string    `json:"name,omitempty"`
	Local    bool      `json:"local,omitempty"`
	State    State     `json:"state"`
	Message  string    `json:"message,omitempty"`
	Progress float64   `json:"progress"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// PendingReports counts status reports not yet delivered.
	PendingReports int `json:"pending_reports,omitempty"`
	// ProgressUnknown: the job is in Klipper but the bridge is down (or
	// not yet back after a restart), so Progress is only the last known.
	ProgressUnknown bool `json:"progress_unknown,omitempty"`
}

// Snapshot is the engine's state for the API and CLI.
type Snapshot struct {
	Active   *JobInfo  `json:"active,omitempty"`
	Queue    []JobInfo `json:"queue"`    // accepted jobs, in start order
	Finished []JobInfo `json:"finished"` // newest first, at most 50
	// Waiting says why the queue is not moving ("" when it is).
	Waiting   string `json:"waiting,omitempty"`
	BedClear  bool   `json:"bed_clear"`
	AutoStart bool   `json:"auto_start"`
	// JournalProblem says why the job journal cannot be written ("state
	// disk full: …"), "" when it can.
	JournalProblem string `json:"journal_problem,omitempty"`
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

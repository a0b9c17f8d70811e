package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// Preparing a job: download (or open), decrypt and gate it into a sealed
// memfd on a low-priority thread, then accept → check → hand off to Klipper.

type prepResult struct {
	id       string
	prepared *Prepared
	err      error
	// transient: a refetch failed for a reason that may pass; requeue.
	transient bool
}

// prepVerb names the preparation step: a local job is read from the
// owner's upload, never downloaded (and may not be encrypted at all).
func prepVerb(r *record) string {
	if r.Local {
		return "Checking"
	}
	return "Downloading"
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
	e.progressLocked(r, jobstatus.Processing, fmt.Sprintf("%s: %d%%", prepVerb(r), percent))
	e.console(fmt.Sprintf("%s %s: %d%%", strings.ToLower(prepVerb(r)), displayName(r), percent))
}

// onPrepared continues a job whose file is ready (or failed) in three
// steps: accept the result and journal the job ready, check it against the
// printer (unlocked: the check and the stub read the file), then journal
// the hand-off and give the file to Klipper.
func (e *Engine) onPrepared(ctx context.Context, res prepResult) {
	a, r, ok := e.acceptPrepared(res)
	if !ok {
		return
	}
	var checkErr error
	if e.o.Check != nil {
		checkErr = e.o.Check(ctx, res.id, res.prepared.Metadata)
	}
	stub := e.buildStub(res.id, res.prepared)
	h, ok := e.beginHandOff(a, r, stub, checkErr)
	if !ok {
		return
	}
	h.req.Filename = e.writeStub(r.ID, h.printName, stub)
	e.handOff(ctx, a, r, h, res.prepared.File)
}

// acceptPrepared takes the preparation's result for the active job and
// journals the job ready. ok is false when the job goes no further: it is
// not the active job any more, was cancelled meanwhile, failed, or went back
// to the queue.
func (e *Engine) acceptPrepared(res prepResult) (a *activeJob, r *record, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a = e.active
	if a == nil || a.id != res.id {
		if res.prepared != nil {
			_ = res.prepared.File.Close()
		}
		return nil, nil, false
	}
	a.prepCancel()
	a.prepared = res.prepared
	a.localHeld = false // prepare has closed the body
	r = e.recs[a.id]
	switch {
	case a.cancelReason != "":
		e.finishActiveLocked(Cancelled, "Cancelled: "+a.cancelReason, false)
		return nil, nil, false
	case res.err != nil && res.transient:
		e.notBefore[r.ID] = e.clock.Now().Add(e.o.RetryMax)
		if err := e.transition(r, Accepted, res.err.Error()+"; will retry", nil); err != nil {
			e.log.Error("journal", "err", err)
		}
		e.active = nil
		return nil, nil, false
	case res.err != nil:
		if r.Local && isVerificationFailure(res.err.Error()) {
			e.localFailures = append(e.localFailures, e.clock.Now())
		}
		e.finishActiveLocked(Failed, res.err.Error(), false)
		return nil, nil, false
	}
	prior := snapshotRecord(r)
	readyMsg := "Decrypted and checked"
	if r.Local {
		readyMsg = "Checked" // a local file may not have been encrypted at all
	}
	if err := e.transition(r, Ready, readyMsg, nil); err != nil {
		e.requeueUnjournaledLocked(a, r, prior)
		return nil, nil, false
	}
	return a, r, true
}

// handOffPlan is what the hand-off needs once the job is journaled printing.
type handOffPlan struct {
	req       PrintRequest
	name      string // displayName, for the console
	printName string // the stub's name reserved for print_stats, "" none
}

// beginHandOff ends the job if the check refused it or it was cancelled
// meanwhile, queues it again if the printer became unavailable, and
// otherwise journals it printing: from then on it is never printed again.
// ok is false when it is not to be handed over.
func (e *Engine) beginHandOff(a *activeJob, r *record, stub []byte, checkErr error) (h handOffPlan, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if checkErr != nil {
		e.finishActiveLocked(Failed, "Not compatible with this printer: "+checkErr.Error(), false)
		return h, false
	}
	if a.cancelReason != "" {
		e.finishActiveLocked(Cancelled, "Cancelled: "+a.cancelReason, false)
		return h, false
	}
	if reason := e.blockedLocked(); reason != "" {
		// The plaintext must not wait around for the printer: drop it
		// and fetch again when the printer is ready.
		_ = a.prepared.File.Close()
		e.active = nil
		_ = e.transition(r, Accepted, "The printer became unavailable before the print started; queued again", nil)
		return h, false
	}
	prior := snapshotRecord(r)
	e.reserveStubLocked(r, stub)
	if err := e.transition(r, Printing, "Printing: 0.0%", &Report{Status: jobstatus.Printing, Message: "Printing: 0.0%"}); err != nil {
		e.requeueUnjournaledLocked(a, r, prior)
		return h, false
	}
	a.handed = true
	// Armed together with the journaled hand-off, so a heartbeat is due
	// 30 s after anyone can see the job printing.
	e.hbTimer = e.clock.NewTimer(e.o.HeartbeatInterval)
	e.startTimer = e.clock.NewTimer(e.o.StartTimeout)
	delete(e.offers, r.ID)
	return handOffPlan{
		req:       PrintRequest{JobID: r.ID, Name: VirtualName(r.ID), Title: r.Name, Size: a.prepared.Size, Metadata: a.prepared.Metadata},
		name:      displayName(r),
		printName: r.PrintName,
	}, true
}

// handOff gives the journaled job's file to Klipper and follows the answer.
func (e *Engine) handOff(ctx context.Context, a *activeJob, r *record, h handOffPlan, f *memfd.File) {
	before := e.o.Printer.Status().Session
	hctx, cancel := context.WithTimeout(ctx, e.o.HandOffTimeout)
	err := e.o.Printer.Print(hctx, h.req, f)
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
		e.console("started " + h.name)
	}
	if a.cancelReason != "" {
		go e.cancelInKlipper(r.ID, a.cancelReason)
	}
	e.monitorLocked(e.status)
}

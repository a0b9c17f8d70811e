package jobs

import (
	"context"
	"fmt"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
)

// Following Klipper: the active print's progress and end, heartbeats, and
// the bed-clear state that any print's end resets.

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

func (e *Engine) onHeartbeat() {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.active
	if a == nil || !a.handed {
		return
	}
	r := e.recs[a.id]
	if r.State == Printing && !a.lostConn {
		e.progressLocked(r, jobstatus.Printing, progressMessage(r.Progress))
	}
	e.hbTimer = e.clock.NewTimer(e.o.HeartbeatInterval)
}

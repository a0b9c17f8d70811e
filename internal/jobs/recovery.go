package jobs

import (
	"fmt"
	"sort"
)

// Restart reconciliation: what the journal left, and what Klipper says
// became of the jobs handed to it before the restart.

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

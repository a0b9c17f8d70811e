package jobs

import "strings"

// A job whose journal record was damaged (truncated, unreadable) is
// quarantined, never taken as new: its id is in the index, so the next poll
// cannot make it a fresh job to download and print again. If the index says
// it had finished and its outcome was delivered, only a placeholder record
// is kept. Otherwise it may be printing: it waits, like the prints handed to
// Klipper before a restart, for Klipper's status, and is followed to its end
// if Klipper prints it, or reported failed if not.

const damagedRecord = "State record damaged"

// quarantineLocked replaces the records the store set aside.
func (e *Engine) quarantineLocked() {
	for _, id := range e.st.damaged {
		r := &record{ID: id, Local: strings.HasPrefix(id, "local-"), Created: e.clock.Now()}
		var err error
		if e.st.idx.done[id] {
			err = e.transition(r, Failed, damagedRecord+" after the job had finished; its outcome was reported before", nil)
		} else {
			err = e.transition(r, Printing, damagedRecord+"; waiting for Klipper to tell whether it is printing the job", nil)
		}
		if err != nil {
			e.log.Error("journal", "job", id, "err", err)
		}
		e.recs[id] = r
	}
	e.st.damaged = nil
}

// lostMessage is why a job handed off before a restart is failed when
// Klipper does not show it: for a quarantined one, that its record was
// damaged.
func lostMessage(r *record, otherwise string) string {
	if strings.HasPrefix(r.Message, damagedRecord) {
		return damagedRecord + ", and Klipper is not printing the job: reported failed, not downloaded again"
	}
	return otherwise
}

package jobs

import (
	"testing"
	"time"
)

// While the bridge is down, a printing job's progress is unknown, not the
// last figure (issue 18: "printing … (0%)" for up to 29 s).
func TestProgressUnknownWhileKlipperIsAway(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(1)
	d := w.startDaemon(func(o *Options) { o.ReconnectGrace = time.Hour })
	id := w.createJob(fixtureGcode(t))
	d.poll(t)
	// Progress moving means the hand-off is over and Klipper reports.
	d.waitJob(t, id, "printing, progress known", func(j JobInfo) bool {
		return j.State == Printing && j.Progress > 0 && !j.ProgressUnknown
	})
	w.stopKlipper()
	d.waitJob(t, id, "progress unknown", func(j JobInfo) bool { return j.State == Printing && j.ProgressUnknown })
}

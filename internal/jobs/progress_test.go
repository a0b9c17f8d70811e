package jobs_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
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

// A print that survives a lost bridge connection is followed again once
// the new connection shows it: progress known, the lost-connection message
// gone, heartbeats going out again.
func TestPrintSurvivesAReconnect(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(1)
	d := w.startDaemon(func(o *Options) { o.ReconnectGrace = time.Hour })
	id := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, id, "printing, progress known", func(j JobInfo) bool {
		return j.State == Printing && j.Progress > 0 && !j.ProgressUnknown
	})
	engineSession := func() (string, bool) {
		st := d.eng.PrinterSeen()
		return st.Session, st.Connected
	}
	first, _ := engineSession()
	k.Disconnect()
	// The engine itself must have seen the new connection: until then its
	// snapshot still shows the old one's view.
	if !waitEngine(t, d.eng, func(s Snapshot) bool {
		session, connected := engineSession()
		return session != first && connected && s.Active != nil && s.Active.ID == id &&
			!s.Active.ProgressUnknown && strings.HasPrefix(s.Active.Message, "Printing: ")
	}) {
		t.Fatalf("after the reconnect: %+v\nlog:\n%s", d.eng.Snapshot().Active, d.logs.String())
	}
	before := len(w.sim.StatusHistory(id))
	w.clock.Advance(time.Minute) // past the heartbeat interval
	w.waitHistory(id, "a heartbeat after the reconnect", func(h []marketsim.StatusPost) bool {
		return len(h) > before && h[len(h)-1].Status == jobstatus.Printing
	})
}

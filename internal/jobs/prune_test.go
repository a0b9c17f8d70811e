package jobs_test

import (
	"context"
	"testing"
	"time"

	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
)

// TestPrunedJobNeverPrintedAgain: a job whose record was pruned beyond
// KeepFinished, offered again by a stale poll after a restart, is ignored.
func TestPrunedJobNeverPrintedAgain(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(0)
	keepOne := func(o *Options) { o.KeepFinished = 1 }
	d := w.startDaemon(keepOne)
	first := w.createJob(fixtureGcode(t))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	js, err := d.client.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stale := adapters.Offers(js)
	d.eng.Offer(stale)
	d.waitJob(t, first, "success", func(j JobInfo) bool { return j.State == Succeeded && j.PendingReports == 0 })
	if err := d.eng.ConfirmBedClear(); err != nil {
		t.Fatal(err)
	}
	// Pruning keeps the newest: make the second job finish later.
	w.clock.Advance(time.Minute)
	second := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, second, "success", func(j JobInfo) bool { return j.State == Succeeded && j.PendingReports == 0 })
	d.stop()
	prints := len(w.klipper.Prints())

	// Opening the journal prunes the first job's record.
	d = w.startDaemon(keepOne)
	defer d.stop()
	if _, ok := journaled(t, w.stateDir, first); ok {
		t.Fatal("the first job's record was not pruned")
	}
	d.eng.Offer(stale) // Offer journals synchronously what it accepts
	if s := d.eng.Snapshot(); s.Active != nil || len(s.Queue) != 0 {
		t.Fatalf("a pruned job came back: %+v", s)
	}
	if n := len(w.klipper.Prints()); n != prints {
		t.Fatalf("Klipper printed %d times, was %d", n, prints)
	}
}

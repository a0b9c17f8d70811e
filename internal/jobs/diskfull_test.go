package jobs_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// fullDisk makes the journal directory a tiny tmpfs (root) and returns
// functions that fill it to ENOSPC and free it again. Where no tmpfs can be
// mounted, the journal's writer fails with ENOSPC instead while "full".
func fullDisk(t *testing.T, w *world, eng func() *Engine) (fill, free func()) {
	t.Helper()
	dir := filepath.Join(w.stateDir, "jobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700")
	if err == nil {
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
		return fillTmpfs(t, dir)
	}
	t.Logf("no tmpfs (%v): injecting ENOSPC into the journal writer", err)
	set := func(write func(string, []byte) error) {
		eng().SetJournalWrite(write)
	}
	fill = func() {
		set(func(string, []byte) error { return fmt.Errorf("write: %w", syscall.ENOSPC) })
	}
	free = func() { set(atomicfile.Write) }
	return fill, free
}

func fillTmpfs(t *testing.T, dir string) (fill, free func()) {
	filler := filepath.Join(dir, "filler")
	fill = func() {
		f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte{0}, 512)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				return
			}
		}
	}
	free = func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	return fill, free
}

// TestFullStateDisk is issue 15 item 6: the state disk fills up while a job
// prints. Its end is kept in memory and shown as "state disk full", nothing
// is reported before it is journaled, no new job is accepted meanwhile, and
// once space returns the outcome is journaled and reported exactly once.
func TestFullStateDisk(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(1)
	var d *daemon
	fill, free := fullDisk(t, w, func() *Engine { return d.eng })
	d = w.startDaemon()
	defer func() { d.stop() }()

	id := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, id, "printing", func(j JobInfo) bool { return j.State == Printing && j.PendingReports == 0 })
	w.waitKlipper("printing", func(st klipper.Status) bool { return st.PrintStats.State == "printing" })

	fill()
	if err := w.klipper.Cancel(); err != nil {
		t.Fatal(err)
	}
	d.waitJob(t, id, "cancelled in memory", func(j JobInfo) bool { return j.State == Cancelled })
	s := d.eng.Snapshot()
	if !strings.HasPrefix(s.JournalProblem, "state disk full") {
		t.Fatalf("JournalProblem = %q", s.JournalProblem)
	}
	if r, _ := journaled(t, w.stateDir, id); r.State != Printing {
		t.Fatalf("journal shows %s while the disk is full", r.State)
	}
	// A second job offered meanwhile is not accepted (nothing journaled,
	// nothing reported); the next poll brings it again.
	second := w.createJob(fixtureGcode(t))
	d.poll(t)
	time.Sleep(300 * time.Millisecond) // time for a wrong report to go out
	if h := w.sim.StatusHistory(id); hasTerminal(h) {
		t.Fatalf("reported before the outcome was journaled: %s", historyString(h))
	}
	if h := w.sim.StatusHistory(second); len(h) != 0 {
		t.Fatalf("second job reported while the disk is full: %s", historyString(h))
	}
	if s := d.eng.Snapshot(); len(s.Queue) != 0 {
		t.Fatalf("second job accepted without a journal: %+v", s.Queue)
	}

	free()
	w.clock.Advance(FlushRetryMax) // the journal's retry
	d.waitJob(t, id, "reported", func(j JobInfo) bool { return j.PendingReports == 0 })
	if s := d.eng.Snapshot(); s.JournalProblem != "" {
		t.Fatalf("JournalProblem after space returned: %q", s.JournalProblem)
	}
	if r, _ := journaled(t, w.stateDir, id); r.State != Cancelled || len(r.Pending) != 0 {
		t.Fatalf("journal after space returned: %+v", r)
	}
	h := w.waitHistory(id, "the outcome", hasTerminal)
	if terminalCount(h) != 1 {
		t.Fatalf("history %s", historyString(h))
	}
	// The second job now comes in and prints.
	if err := d.eng.ConfirmBedClear(); err != nil {
		t.Fatal(err)
	}
	d.poll(t)
	d.waitJob(t, second, "printing", func(j JobInfo) bool { return j.State == Printing })

	// A restart finds nothing to report again.
	d.stop()
	d = w.startDaemon()
	time.Sleep(200 * time.Millisecond)
	if h := w.sim.StatusHistory(id); terminalCount(h) != 1 {
		t.Fatalf("history after a restart %s", historyString(h))
	}
}

// waitFlushArmed waits until the engine's loop has armed the journal retry,
// so that advancing the clock fires it.
func waitFlushArmed(t *testing.T, e *Engine) {
	t.Helper()
	testutil.Eventually(t, testTimeout, "the journal retry to be armed", e.FlushArmed)
}

// The bed-clear state is retried like the journal when it cannot be
// written, and no job starts before it is on disk: a restart would
// otherwise find the bed clear after a print.
func TestBedStateWriteRetried(t *testing.T) {
	w := newWorld(t)
	w.startKlipper(0)
	manual := func(o *Options) { o.AutoStart = false }
	d := w.startDaemon(manual)
	defer func() { d.stop() }()
	// A directory where bed.json goes makes its atomic replacement fail.
	bedFile := filepath.Join(w.stateDir, "bed.json")
	block := func() {
		if err := os.RemoveAll(bedFile); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(bedFile, "blocker"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	unblock := func() {
		if err := os.RemoveAll(bedFile); err != nil {
			t.Fatal(err)
		}
	}
	retried := func() {
		t.Helper()
		waitFlushArmed(t, d.eng)
		w.clock.Advance(FlushRetryMax)
		if !waitEngine(t, d.eng, func(s Snapshot) bool { return s.JournalProblem == "" }) {
			t.Fatalf("the retry did not write the bed-clear state: %+v", d.eng.Snapshot())
		}
	}

	// A print ends while bed.json cannot be written.
	block()
	a := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, a, "success", func(j JobInfo) bool { return j.State == Succeeded })
	if !waitEngine(t, d.eng, func(s Snapshot) bool { return strings.Contains(s.JournalProblem, "bed-clear state") }) {
		t.Fatalf("snapshot after a failed bed-clear write: %+v", d.eng.Snapshot())
	}
	unblock()
	retried()
	if data, err := os.ReadFile(bedFile); err != nil || !strings.Contains(string(data), `"clear":false`) {
		t.Fatalf("bed.json after the retry: %q, %v", data, err)
	}
	d.stop()
	d = w.startDaemon(manual)
	if s := d.eng.Snapshot(); s.BedClear {
		t.Fatalf("after a restart the bed counts as clear: %+v", s)
	}

	// A confirmation that cannot be written yet is taken, but no job
	// starts before it is on disk.
	block()
	if err := d.eng.ConfirmBedClear(); err == nil || !strings.Contains(err.Error(), "retrying") {
		t.Fatalf("ConfirmBedClear on an unwritable state directory: %v", err)
	}
	b := w.createJob(fixtureGcode(t))
	d.poll(t)
	if !waitEngine(t, d.eng, func(s Snapshot) bool {
		return s.BedClear && len(s.Queue) == 1 && strings.Contains(s.Waiting, "journal to be writable")
	}) {
		t.Fatalf("snapshot with an unsaved confirmation: %+v", d.eng.Snapshot())
	}
	unblock()
	retried()
	if j := d.waitJob(t, b, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
		t.Fatalf("job after the confirmation was written: %s %q", j.State, j.Message)
	}
}

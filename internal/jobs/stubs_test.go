package jobs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/mdstub"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// stubWorld gives the daemon a gcodes directory with the stub folder.
func stubWorld(t *testing.T) (*world, mdstub.Dir) {
	w := newWorld(t)
	dir := mdstub.Dir{Gcodes: t.TempDir()}
	if err := os.Mkdir(dir.Path(), 0o755); err != nil {
		t.Fatal(err)
	}
	return w, dir
}

func withStubs(dir mdstub.Dir, check func()) daemonOption {
	return func(o *Options) {
		o.Stubs = dir
		o.StubGrace = 20 * time.Millisecond
		o.Check = func(ctx context.Context, id string, m *gcode.Metadata) error {
			check()
			return nil
		}
	}
}

func stubFiles(t *testing.T, dir mdstub.Dir) []string {
	t.Helper()
	ents, err := os.ReadDir(dir.Path())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func waitNoStubs(t *testing.T, dir mdstub.Dir, what string) {
	t.Helper()
	testutil.Eventually(t, testTimeout, what+": no stubs left", func() bool { return len(stubFiles(t, dir)) == 0 })
}

// The stub is written only at the hand-off (after every gate), is what
// Klipper's print_stats shows, and is gone after every way a job ends.
func TestStubLifecycle(t *testing.T) {
	w, dir := stubWorld(t)
	k := w.startKlipper(1)
	gate := func() {
		if f := stubFiles(t, dir); len(f) != 0 {
			t.Errorf("stub written before the gate passed: %v", f)
		}
	}
	d := w.startDaemon(withStubs(dir, gate))
	plain := fixtureGcode(t)

	runUntilPrinting := func() (string, string) {
		id := w.createJob(plain)
		d.poll(t)
		d.waitJob(t, id, "printing", func(j JobInfo) bool { return j.State == Printing })
		st := w.waitKlipper("the stub name in print_stats", func(st klipper.Status) bool {
			return mdstub.IsStub(st.PrintStats.Filename) && st.PrintStats.State == standin.StatePrinting
		})
		name := st.PrintStats.Filename
		data, err := os.ReadFile(filepath.Join(dir.Gcodes, name))
		if err != nil {
			t.Fatalf("stub %s missing while printing: %v", name, err)
		}
		if !strings.HasPrefix(string(data), mdstub.GuardCommand+" ") || strings.Contains(string(data), "\nG1 ") {
			t.Fatalf("stub content:\n%s", data)
		}
		return id, name
	}

	// Cancelled by the owner.
	id, name := runUntilPrinting()
	if !strings.HasPrefix(name, ".lmnt/LMNT job ") {
		t.Errorf("untitled job's stub %q", name)
	}
	if err := d.eng.Cancel(id, "by the owner"); err != nil {
		t.Fatal(err)
	}
	d.waitJob(t, id, "cancelled", func(j JobInfo) bool { return j.State == Cancelled })
	waitNoStubs(t, dir, "after a cancel")

	// Failed in Klipper.
	id, _ = runUntilPrinting()
	if err := k.InjectError("Move out of range"); err != nil {
		t.Fatal(err)
	}
	d.waitJob(t, id, "failed", func(j JobInfo) bool { return j.State == Failed })
	waitNoStubs(t, dir, "after a failure")

}

func TestStubGoneAfterSuccessOrKeptOnRequest(t *testing.T) {
	for _, keep := range []bool{false, true} {
		w, dir := stubWorld(t)
		w.startKlipper(0)
		d := w.startDaemon(withStubs(dir, func() {}), func(o *Options) { o.KeepStubs = keep })
		id := w.createJob(fixtureGcode(t))
		d.poll(t)
		if j := d.waitJob(t, id, "done", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
			t.Fatalf("job %s: %s", j.State, j.Message)
		}
		if keep {
			time.Sleep(100 * time.Millisecond) // 5× the grace
			if f := stubFiles(t, dir); len(f) != 1 {
				t.Fatalf("keep_metadata_stub: folder holds %v", f)
			}
		} else {
			waitNoStubs(t, dir, "after success")
		}
		if p := w.klipper.Prints(); len(p) != 1 || !mdstub.IsStub(p[0].Filename) {
			t.Fatalf("prints %+v", p)
		}
		d.stop()
	}
}

// A job the compatibility check refuses never gets a stub.
func TestStubNeverBeforeTheGate(t *testing.T) {
	w, dir := stubWorld(t)
	w.startKlipper(0)
	d := w.startDaemon(func(o *Options) {
		o.Stubs = dir
		o.Check = func(ctx context.Context, id string, m *gcode.Metadata) error {
			return errors.New("nozzle 0.6 mm, job sliced for 0.4 mm")
		}
	})
	id := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, id, "failed", func(j JobInfo) bool { return j.State == Failed })
	if f := stubFiles(t, dir); len(f) != 0 {
		t.Fatalf("stub of a refused job: %v", f)
	}
}

// lmntd dies mid-print: at the next start the stale stubs of a previous
// run go, the running print's stays and is still recognised as the job's,
// and it goes when that print ends.
func TestStaleStubsCleanedAtStart(t *testing.T) {
	w, dir := stubWorld(t)
	k := w.startKlipper(1)
	d := w.startDaemon(withStubs(dir, func() {}))
	id := w.createJob(fixtureGcode(t))
	d.poll(t)
	d.waitJob(t, id, "printing", func(j JobInfo) bool { return j.State == Printing })
	st := w.waitKlipper("stub in print_stats", func(st klipper.Status) bool { return mdstub.IsStub(st.PrintStats.Filename) })
	live := st.PrintStats.Filename
	// The hand-off is over once lmntd said "started" on the console.
	waitConsole(t, k, "the start", func(l string) bool { return strings.Contains(l, "started") })
	d.stop()
	for _, n := range []string{"Old job.gcode", ".stub-42.tmp"} {
		if err := os.WriteFile(filepath.Join(dir.Path(), n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d = w.startDaemon(withStubs(dir, func() {}))
	if got := stubFiles(t, dir); len(got) != 1 || ".lmnt/"+got[0] != live {
		t.Fatalf("after the restart the folder holds %v, want only %s", got, live)
	}
	if err := k.Cancel(); err != nil {
		t.Fatal(err)
	}
	j := d.waitJob(t, id, "ended", func(j JobInfo) bool { return j.State.Terminal() })
	if j.State != Cancelled && j.State != Failed {
		t.Fatalf("recovered job ended %s: %s", j.State, j.Message)
	}
	if strings.Contains(j.Message, "lost while lmntd was not running") {
		t.Fatalf("the print under its stub name was not recognised: %s", j.Message)
	}
	waitNoStubs(t, dir, "after the recovered print ended")
}

package jobs

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/clock/clocktest"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

func TestStoreRoundTripAndCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	s, recs, err := openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("fresh store has %d records", len(recs))
	}
	r := &record{ID: "job-1", State: Printing, Seq: 3, Created: time.Unix(100, 0).UTC(),
		Pending: []pendingReport{{Seq: 3, Report: Report{Status: jobstatus.Printing, Message: "Printing: 0.0%"}}}}
	if err := s.save(r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "jobs", "job-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}
	// A leftover temp file (a crash mid-write) and a damaged record.
	if err := os.WriteFile(filepath.Join(dir, "jobs", ".job-2.json.tmp123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jobs", "job-3.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, recs, err = openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs["job-1"] == nil || recs["job-1"].State != Printing || len(recs["job-1"].Pending) != 1 {
		t.Fatalf("reloaded records = %+v", recs)
	}
	if _, err := os.Stat(filepath.Join(dir, "jobs", "job-3.json.corrupt")); err != nil {
		t.Errorf("corrupt record not set aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jobs", ".job-2.json.tmp123")); !os.IsNotExist(err) {
		t.Errorf("temp file not cleaned: %v", err)
	}
}

func TestPruneKeepsNewestFinishedAndAllWithPendingReports(t *testing.T) {
	dir := t.TempDir()
	s, recs, err := openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1000, 0)
	for i, id := range []string{"a", "b", "c", "d"} {
		r := &record{ID: id, State: Succeeded, Updated: base.Add(time.Duration(i) * time.Minute)}
		if id == "a" {
			r.Pending = []pendingReport{{Report: Report{Status: jobstatus.Success}}}
		}
		recs[id] = r
		if err := s.save(r); err != nil {
			t.Fatal(err)
		}
	}
	recs["q"] = &record{ID: "q", State: Accepted, Updated: base}
	s.prune(recs, 2)
	var got []string
	for _, id := range []string{"a", "b", "c", "d", "q"} {
		if recs[id] != nil {
			got = append(got, id)
		}
	}
	if strings.Join(got, ",") != "a,c,d,q" {
		t.Fatalf("kept %v, want a (pending report), c, d (newest), q (queued)", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "jobs", "b.json")); !os.IsNotExist(err) {
		t.Errorf("pruned record still on disk: %v", err)
	}
}

func TestQueueReportCoalescesHeartbeats(t *testing.T) {
	e := &Engine{clock: clocktest.NewFake()}
	r := &record{ID: "j", Seq: 1}
	e.queueReportLocked(r, Report{Status: jobstatus.Printing, Message: "Printing: 0.0%"}, false)
	for i := 0; i < 20; i++ { // ten minutes offline
		e.queueReportLocked(r, Report{Status: jobstatus.Printing, Message: "Printing: " + strings.Repeat("x", i)}, true)
	}
	if len(r.Pending) != 2 || !r.Pending[1].Heartbeat || r.Pending[1].Report.Message != "Printing: "+strings.Repeat("x", 19) {
		t.Fatalf("pending after heartbeats = %+v", r.Pending)
	}
	e.queueReportLocked(r, Report{Status: jobstatus.Success}, false)
	if len(r.Pending) != 2 || r.Pending[0].Report.Message != "Printing: 0.0%" || r.Pending[1].Report.Status != jobstatus.Success {
		t.Fatalf("a final report must supersede pending heartbeats, got %+v", r.Pending)
	}
}

func TestBackoffBounds(t *testing.T) {
	min, max := 5*time.Second, 5*time.Minute
	e := &Engine{o: Options{RetryMin: min, RetryMax: max}}
	for attempt := 1; attempt <= 20; attempt++ {
		want := min << (attempt - 1)
		if attempt > 7 || want > max {
			want = max
		}
		for i := 0; i < 50; i++ {
			d := e.retryDelay(true, attempt, nil)
			if d < want*8/10 || d > want*12/10 {
				t.Fatalf("attempt %d: backoff %v outside %v ±20%%", attempt, d, want)
			}
		}
	}
}

func TestRunLowPriorityLowersThreadPriority(t *testing.T) {
	type prio struct {
		nice, ioprio int
		err          error
	}
	got := runLowPriority(discardLogger(), func() prio {
		p, err := threadprio.Of(unix.Gettid())
		return prio{nice: p.Nice, ioprio: p.IOPrio, err: err}
	})
	if got.err != nil {
		t.Fatal(got.err)
	}
	if got.nice != workNice {
		t.Errorf("decrypt thread nice = %d, want %d", got.nice, workNice)
	}
	if want := 2<<13 | 7; got.ioprio != want {
		t.Errorf("decrypt thread ioprio = %#x, want %#x (best effort, level 7)", got.ioprio, want)
	}
	// The caller's thread keeps its priority.
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	if 20-p == workNice {
		t.Errorf("the calling thread was lowered too")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

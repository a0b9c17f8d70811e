package metrics

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

var testClasses = []string{"network", "server"}

type fakeState struct {
	reports  int
	oldest   time.Time
	expiry   time.Time
	paired   bool
	klipper  bool
	push     bool
	lastPoll time.Time
}

func (f *fakeState) gauges() Gauges {
	return Gauges{
		Outbox:           func() (int, time.Time) { return f.reports, f.oldest },
		Token:            func() (time.Time, bool) { return f.expiry, f.paired },
		KlipperConnected: func() bool { return f.klipper },
		PushConnected:    func() bool { return f.push },
		LastPoll:         func() time.Time { return f.lastPoll },
	}
}

func scrape(t *testing.T, m *Metrics) testutil.Scrape {
	t.Helper()
	var b bytes.Buffer
	m.WritePrometheus(&b)
	return testutil.ParseMetrics(t, b.String())
}

func TestEverySeriesExistsFromTheStartAndParses(t *testing.T) {
	m := New(Options{Instance: "printer_1", Version: "1.2.3", ErrorClasses: testClasses, Gauges: (&fakeState{}).gauges()})
	s := scrape(t, m)
	inst := map[string]string{"lmnt_instance": "printer_1"}
	for _, st := range JobStates {
		if v, ok := s.Value("lmntd_job_transitions_total", map[string]string{"lmnt_instance": "printer_1", "state": st}); !ok || v != 0 {
			t.Errorf("transitions to %s = %v, %v; want 0, present", st, v, ok)
		}
	}
	for _, c := range testClasses {
		if _, ok := s.Value("lmntd_marketplace_request_errors_total", map[string]string{"class": c}); !ok {
			t.Errorf("request errors of class %s missing", c)
		}
	}
	for _, name := range []string{"lmntd_decrypted_bytes_total", "lmntd_outbox_reports", "lmntd_outbox_oldest_age_seconds",
		"lmntd_paired", "lmntd_token_expires_in_seconds", "lmntd_klipper_connected", "lmntd_push_connected",
		"lmntd_last_successful_poll_timestamp_seconds"} {
		if _, ok := s.Value(name, inst); !ok {
			t.Errorf("%s missing", name)
		}
	}
	if v, ok := s.Value("lmntd_info", map[string]string{"version": "1.2.3"}); !ok || v != 1 {
		t.Errorf("lmntd_info = %v, %v", v, ok)
	}
	if f := s["lmntd_decrypt_duration_seconds"]; f == nil || f.GetType().String() != "HISTOGRAM" {
		t.Errorf("decrypt duration is not exposed as a histogram: %v", f)
	}
}

func TestCountersAndGaugesFollowTheDaemon(t *testing.T) {
	now := time.Now()
	f := &fakeState{reports: 3, oldest: now.Add(-90 * time.Second), expiry: now.Add(time.Hour), paired: true,
		klipper: true, push: false, lastPoll: time.Unix(1_700_000_000, 0)}
	m := New(Options{Version: "dev", ErrorClasses: testClasses, Gauges: f.gauges()})
	for _, st := range []string{"accepted", "downloading", "ready", "printing", "succeeded", "accepted", "downloading", "failed"} {
		m.JobEntered(st)
	}
	m.Decrypted(1000, 2*time.Second)
	m.Decrypted(24+3<<30, 20*time.Millisecond) // past 2 GiB: no overflow on 32-bit boards
	m.JobStarted(3 * time.Second)
	m.RequestFailed("server")
	m.RequestFailed("server")
	m.RequestFailed("no such class") // ignored, not a new series
	s := scrape(t, m)

	want := []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"lmntd_job_transitions_total", map[string]string{"state": "accepted"}, 2},
		{"lmntd_job_transitions_total", map[string]string{"state": "printing"}, 1},
		{"lmntd_jobs_finished_total", map[string]string{"outcome": "succeeded"}, 1},
		{"lmntd_jobs_finished_total", map[string]string{"outcome": "failed"}, 1},
		{"lmntd_jobs_finished_total", map[string]string{"outcome": "cancelled"}, 0},
		{"lmntd_decrypted_bytes_total", nil, 1024 + 3<<30},
		{"lmntd_decrypt_duration_seconds", nil, 2},
		{"lmntd_job_start_duration_seconds", nil, 1},
		{"lmntd_marketplace_request_errors_total", map[string]string{"class": "server"}, 2},
		{"lmntd_outbox_reports", nil, 3},
		{"lmntd_paired", nil, 1},
		{"lmntd_klipper_connected", nil, 1},
		{"lmntd_push_connected", nil, 0},
		{"lmntd_last_successful_poll_timestamp_seconds", nil, 1_700_000_000},
	}
	for _, w := range want {
		if v, ok := s.Value(w.name, w.labels); !ok || v != w.v {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.v)
		}
	}
	if v, _ := s.Value("lmntd_outbox_oldest_age_seconds", nil); v < 90 || v > 100 {
		t.Errorf("oldest report age = %v s, want about 90", v)
	}
	if v, _ := s.Value("lmntd_token_expires_in_seconds", nil); v < 3500 || v > 3600 {
		t.Errorf("token expires in %v s, want about 3600", v)
	}
	if h := s["lmntd_decrypt_duration_seconds"].Metric[0].Histogram; h.GetSampleSum() < 2.0 || h.GetSampleSum() > 2.03 {
		t.Errorf("decrypt duration sum = %v, want 2.02", h.GetSampleSum())
	}
}

func TestTextfileIsReplacedWholeAndReadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lmntd.prom")
	m := New(Options{Instance: "printer_2", Version: "dev", Gauges: (&fakeState{}).gauges()})
	if err := m.WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	m.JobEntered("accepted")
	if err := m.WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.ParseMetrics(t, string(b))
	if v, _ := s.Value("lmntd_job_transitions_total", map[string]string{"lmnt_instance": "printer_2", "state": "accepted"}); v != 1 {
		t.Errorf("textfile has %v accepted jobs, want 1", v)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("textfile mode = %v, %v; want 0644 (node_exporter reads it as its own user)", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only lmntd.prom", len(entries))
	}
	if err := m.WriteTextfile(filepath.Join(dir, "missing", "x.prom")); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

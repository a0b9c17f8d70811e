package daemon_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// TestMetricsDuringAJob scrapes /metrics through the API's unix socket
// before, during and after a marketplace job, parses each scrape with
// Prometheus's text parser and checks the counters move: transitions,
// outcome, bytes decrypted, the decrypt and start histograms, request
// errors during a marketplace outage. The textfile for node_exporter holds
// the same series. A client the API refuses gets no metrics either.
func TestMetricsDuringAJob(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	gcode := cubeGcode(t)
	textfile := filepath.Join(t.TempDir(), "lmntd.prom")
	d := daemontest.Start(t, daemontest.Options{Sim: sim, CheckInterval: "5s", Instance: "printer_1",
		// The print lasts about 3 s: long enough to scrape it running.
		StandinSpeed: int64(len(gcode)) / 3,
		ExtraTOML:    "[jobs]\nauto_start = true\n[metrics]\ntextfile = \"" + textfile + "\"\ntextfile_interval = \"5s\"\n"})
	inst := map[string]string{"lmnt_instance": "printer_1"}
	with := func(k, v string) map[string]string { return map[string]string{"lmnt_instance": "printer_1", k: v} }
	var st apitype.Status
	d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
	if st.Instance != "printer_1" {
		t.Errorf("status names instance %q, want printer_1", st.Instance)
	}
	scrape := func() testutil.Scrape {
		t.Helper()
		r := d.Call(http.MethodGet, "/metrics", nil)
		if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Fatalf("GET /metrics: %d %s: %s", r.Status, r.Header.Get("Content-Type"), r.Body)
		}
		return testutil.ParseMetrics(t, string(r.Body))
	}
	value := func(s testutil.Scrape, name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := s.Value(name, labels)
		if !ok {
			t.Fatalf("scrape lacks %s%v", name, labels)
		}
		return v
	}

	before := scrape()
	if value(before, "lmntd_paired", inst) != 0 || value(before, "lmntd_klipper_connected", inst) != 1 {
		t.Errorf("before pairing: paired %v, Klipper connected %v; want 0, 1",
			value(before, "lmntd_paired", inst), value(before, "lmntd_klipper_connected", inst))
	}
	printerID := d.Pair()
	d.Call(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil)
	d.WaitFor("a successful poll", func() bool { return value(scrape(), "lmntd_last_successful_poll_timestamp_seconds", inst) > 0 })
	paired := scrape()
	if exp := value(paired, "lmntd_token_expires_in_seconds", inst); value(paired, "lmntd_paired", inst) != 1 || exp <= 0 {
		t.Errorf("paired: lmntd_paired %v, token expires in %v s", value(paired, "lmntd_paired", inst), exp)
	}

	job, err := sim.CreateJob(printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var during testutil.Scrape
	d.WaitFor("the job to print", func() bool {
		during = scrape()
		return value(during, "lmntd_job_transitions_total", with("state", "printing")) == 1
	})
	if got := value(during, "lmntd_jobs_finished_total", with("outcome", "succeeded")); got != 0 {
		t.Errorf("while printing: %v jobs succeeded, want 0", got)
	}
	for _, st := range []string{"accepted", "downloading", "ready"} {
		if got := value(during, "lmntd_job_transitions_total", with("state", st)); got != 1 {
			t.Errorf("while printing: %v transitions to %s, want 1", got, st)
		}
	}
	if got := value(during, "lmntd_decrypted_bytes_total", inst); got != float64(len(gcode)) {
		t.Errorf("decrypted bytes = %v, want %d", got, len(gcode))
	}
	if value(during, "lmntd_decrypt_duration_seconds", inst) != 1 || value(during, "lmntd_job_start_duration_seconds", inst) != 1 {
		t.Errorf("histograms: %v decryptions, %v starts; want 1 each",
			value(during, "lmntd_decrypt_duration_seconds", inst), value(during, "lmntd_job_start_duration_seconds", inst))
	}

	if j := waitJobWithin(t, d, job.ID, 30*time.Second); j.State != apitype.JobSucceeded {
		t.Fatalf("job ended %s: %s", j.State, j.Message)
	}
	after := scrape()
	if got := value(after, "lmntd_jobs_finished_total", with("outcome", "succeeded")); got != 1 {
		t.Errorf("after the job: %v succeeded, want 1", got)
	}

	// An outage: polls fail with 503, counted as server errors.
	sim.SetOutage(503, time.Hour)
	d.Call(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil)
	d.WaitFor("a server error counted", func() bool {
		return value(scrape(), "lmntd_marketplace_request_errors_total", with("class", "server")) > 0
	})
	sim.SetOutage(503, 0)

	// The textfile carries the same series, the job's outcome included.
	d.WaitFor("the textfile to show the job", func() bool {
		b, err := os.ReadFile(textfile)
		if err != nil {
			return false
		}
		v, _ := testutil.ParseMetrics(t, string(b)).Value("lmntd_jobs_finished_total", with("outcome", "succeeded"))
		return v == 1
	})
	if c := textfileCheck(t, d); c.Result != apitype.CheckOK || !strings.Contains(c.Detail, textfile+" written") {
		t.Errorf("doctor on the textfile: %+v", c)
	}
}

func textfileCheck(t *testing.T, d *daemontest.Daemon) apitype.Check {
	t.Helper()
	var rep apitype.DoctorReport
	d.Call(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil).JSON(t, &rep)
	for _, c := range rep.Checks {
		if c.Name == "metrics textfile" {
			return c
		}
	}
	return apitype.Check{}
}

// A textfile lmntd cannot write is a doctor warning with the fix, logged
// once however often the write fails; the printer keeps working.
func TestMetricsTextfileUnwritable(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "missing", "lmntd.prom")
	d := daemontest.Start(t, daemontest.Options{NoStandin: true,
		ExtraTOML: "[metrics]\ntextfile = \"" + bad + "\"\ntextfile_interval = \"5s\"\n"})
	d.WaitFor("doctor to warn about the textfile", func() bool {
		c := textfileCheck(t, d)
		return c.Result == apitype.CheckWarn && strings.Contains(c.Detail, bad) && strings.Contains(c.Fix, "ReadWritePaths=")
	})
	if n := strings.Count(d.Log.String(), "metrics: cannot write the textfile"); n != 1 {
		t.Errorf("the failure was logged %d times, want once", n)
	}
}

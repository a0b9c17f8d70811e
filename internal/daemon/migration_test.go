package daemon_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

func doctorReport(t *testing.T, d *daemontest.Daemon) map[string]apitype.Check {
	t.Helper()
	var rep apitype.DoctorReport
	d.Call(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil).JSON(t, &rep)
	out := map[string]apitype.Check{}
	for _, c := range rep.Checks {
		out[c.Name] = c
	}
	return out
}

// A printer migrating from the old plugin's current installer: its
// moonraker.conf says check_interval: 0. lmntd starts, imports it as push
// only, doctor shows what was imported and the safety poll, and a job
// arrives by push and prints.
func TestMigrationFromCurrentInstaller(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{ExtraTOML: "[jobs]\nauto_start = true\n", MoonrakerConf: `[server]
host: 0.0.0.0
port: 7125

# LMNT Marketplace Plugin configuration
[lmnt_marketplace_plugin]
marketplace_url: {{SIM}}
firebase_project_id: lmnt-prod
check_interval: 0

[encrypted_print]
`})
	checks := doctorReport(t, d)
	cfg := checks["config"].Detail
	for _, want := range []string{
		`marketplace.check_interval = "0s" imported from moonraker.conf (`,
		`:9 [lmnt_marketplace_plugin] check_interval)`,
		`marketplace.url = "` + d.Sim.URL() + `" imported from moonraker.conf (`,
		`:7 [lmnt_marketplace_plugin] marketplace_url)`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("doctor's config check lacks %q:\n%s", want, cfg)
		}
	}
	if q := checks["job queue"]; q.Result != apitype.CheckOK || !strings.Contains(q.Detail, "push only (check_interval 0)") || !strings.Contains(q.Detail, "safety poll runs every 5m30s") {
		t.Errorf("doctor's job queue check: %+v", q)
	}
	if p := checks["api profile"]; !strings.HasPrefix(p.Detail, "current (auto: ") || !strings.Contains(p.Detail, "firebase_project_id") {
		t.Errorf("doctor's api profile check: %+v", p)
	}
	printerID := d.Pair()
	d.WaitFor("the push-only log line", func() bool {
		return strings.Contains(d.Log.String(), `msg="marketplace: push only (check_interval 0); safety poll" every=5m30s`)
	})
	gcode := cubeGcode(t)
	job, err := d.Sim.CreateJob(printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJobWithin(t, d, job.ID, 30*time.Second); j.State != apitype.JobSucceeded {
		t.Fatalf("job ended %s: %s", j.State, j.Message)
	}
}

// A seed-era printer whose moonraker.conf names only a marketplace URL
// lmntd does not know: api_profile "auto" probes once at start, the
// seed-era server answers 404 on the current poll path, and lmntd speaks
// legacy: status and doctor say so and why, and registration and a job
// work on the legacy paths.
func TestMigrationSeedEraProbesLegacy(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond, LegacyOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	d := daemontest.Start(t, daemontest.Options{Sim: sim, ExtraTOML: "[jobs]\nauto_start = true\n", MoonrakerConf: `[lmnt_marketplace_plugin]
check_interval: 60
debug_mode: False
marketplace_url: {{SIM}}   # the marketplace of mid-2025
`})
	var st apitype.Status
	d.WaitFor("the probe's verdict in lmnt status", func() bool {
		d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
		return st.Profile == "legacy" && strings.Contains(st.ProfileReason, "answered 404")
	})
	if !strings.Contains(d.Log.String(), `msg="marketplace: api profile" profile=legacy why="auto: GET /api/printer-agent/poll-print-queue answered 404`) {
		t.Errorf("the choice is not logged:\n%s", d.Log.String())
	}
	if p := doctorReport(t, d)["api profile"]; p.Result != apitype.CheckOK || !strings.HasPrefix(p.Detail, "legacy (auto: ") {
		t.Errorf("doctor's api profile check: %+v", p)
	}

	// Register as the seed-era plugin did: a user JWT from the login.
	if _, err := sim.AddUser("owner@example.com", "hunter2"); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	body, _ := json.Marshal(map[string]string{"email": "owner@example.com", "password": "hunter2"})
	resp, err := hc.Post(sim.URL()+"/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	r := d.Call(http.MethodPost, "/machine/lmnt_marketplace/register_printer", map[string]string{"user_token": login.Token, "printer_name": "Seed-era printer"})
	if r.Status != http.StatusOK {
		t.Fatalf("register_printer: %d %s", r.Status, r.Body)
	}
	ps := sim.Printers()
	if len(ps) != 1 || ps[0].Profile != "legacy" {
		t.Fatalf("printers %+v", ps)
	}
	gcode := cubeGcode(t)
	job, err := sim.CreateJob(ps[0].ID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJobWithin(t, d, job.ID, 30*time.Second); j.State != apitype.JobSucceeded {
		t.Fatalf("job ended %s: %s", j.State, j.Message)
	}
	d.WaitFor("the legacy job-status path", func() bool {
		h := sim.StatusHistory(job.ID)
		return len(h) > 0 && h[len(h)-1].Status == "success" && h[len(h)-1].Profile == "legacy"
	})
}

// The probe meets an outage (503 twice, as a printer starting before its
// network or a proxy in front of the marketplace would): it decides
// nothing, retries with backoff, and settles once the marketplace answers.
// Meanwhile doctor says the profile is not settled yet.
func TestAutoProfileProbeRetries(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	sim.SetFault(marketsim.CallPoll, marketsim.Fault{Status: http.StatusServiceUnavailable, Count: 2, Latency: 300 * time.Millisecond})
	d := daemontest.Start(t, daemontest.Options{Sim: sim, NoStandin: true, MoonrakerConf: "[lmnt_marketplace_plugin]\nmarketplace_url: {{SIM}}\n"})
	if p := doctorReport(t, d)["api profile"]; p.Result != apitype.CheckWarn || !strings.Contains(p.Detail, "probing") {
		t.Errorf("doctor while probing: %+v", p)
	}
	var st apitype.Status
	d.WaitFor("the profile to settle", func() bool {
		d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
		return strings.Contains(st.ProfileReason, "answered 401")
	})
	if st.Profile != "current" || strings.Count(d.Log.String(), "api profile probe failed; retrying") != 2 {
		t.Errorf("profile %q (%s); log:\n%s", st.Profile, st.ProfileReason, d.Log.String())
	}
	if p := doctorReport(t, d)["api profile"]; p.Result != apitype.CheckOK {
		t.Errorf("doctor once settled: %+v", p)
	}
}

// Imported values without a sane meaning do not stop lmntd: it starts on
// the built-in values and doctor names each file line, option and key.
func TestMigrationWithUnusableValuesStartsDegraded(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, MoonrakerConf: `[lmnt_marketplace_plugin]
marketplace_url: {{SIM}}
check_interval: often   # hand-edited
debug_mode: maybe
`})
	c := doctorReport(t, d)["moonraker.conf import"]
	for _, want := range []string{
		`moonraker.conf:3 [lmnt_marketplace_plugin] check_interval: marketplace.check_interval: check_interval "often" is not a number of seconds; not imported`,
		`moonraker.conf:4 [lmnt_marketplace_plugin] debug_mode: log.level: debug_mode "maybe" is not a boolean`,
	} {
		if c.Result != apitype.CheckWarn || !strings.Contains(c.Detail, want) {
			t.Errorf("doctor's import check lacks %q: %+v", want, c)
		}
	}
	if !strings.Contains(d.Log.String(), `level=WARN msg="config: value not usable and ignored (lmnt doctor)"`) {
		t.Errorf("not logged:\n%s", d.Log.String())
	}
	if !strings.Contains(doctorReport(t, d)["job queue"].Detail, "polled every 1m0s") {
		t.Errorf("the built-in check_interval is not in effect: %+v", doctorReport(t, d)["job queue"])
	}
}

package daemon_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// Safe start (issue 11) through the whole daemon: the bed-clear
// confirmation from Klipper (LMNT_READY through the stand-in) and from the
// API (`lmnt ready`), surviving a restart; the compatibility check against
// the printer.cfg the daemon watches; `lmnt doctor`'s list of what cannot
// be checked; and the console lines Klipper shows.

const bedWait = "Waiting for the owner to confirm the bed is clear (LMNT_READY)"

func snapshot(t *testing.T, d *daemontest.Daemon) apitype.Snapshot {
	t.Helper()
	var s apitype.Snapshot
	d.Call(http.MethodGet, "/lmnt/v1/jobs", nil).JSON(t, &s)
	return s
}

// queueJob creates a job in the marketplace and makes the daemon poll.
func queueJob(t *testing.T, d *daemontest.Daemon, printerID string, gcode []byte) string {
	t.Helper()
	info, err := d.Sim.CreateJob(printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Call(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil); r.Status != http.StatusOK {
		t.Fatalf("check_jobs: %d %s", r.Status, r.Body)
	}
	return info.ID
}

// waitBedWait waits until job id is queued behind the bed-clear question.
func waitBedWait(t *testing.T, d *daemontest.Daemon, id string) {
	t.Helper()
	d.WaitFor("job "+id+" to wait for the bed", func() bool {
		s := snapshot(t, d)
		for _, j := range s.Queue {
			if j.ID == id {
				return j.State == apitype.JobAccepted && j.Message == bedWait && s.Waiting == bedWait && !s.BedClear && s.Active == nil
			}
		}
		return false
	})
}

func consoleHas(d *daemontest.Daemon, want string) bool {
	for _, l := range d.Standin.ConsoleLines() {
		if l == want {
			return true
		}
	}
	return false
}

// secretsOfJob is what the marketplace sends for a job that must never be
// shown: the download URL (and its signature), the DEK package and the IV.
func secretsOfJob(t *testing.T, d *daemontest.Daemon, id string) []string {
	t.Helper()
	url, dek, iv := queueAsMarketplaceSends(t, d.Sim, storedToken(t, d.StateDir), id)
	out := []string{url, dek, iv}
	if _, sig, ok := strings.Cut(url, "?"); ok {
		out = append(out, sig)
	}
	return out
}

func assertConsoleSafe(t *testing.T, d *daemontest.Daemon, secrets []string) {
	t.Helper()
	secrets = append(secrets, storedToken(t, d.StateDir))
	for _, l := range d.Standin.ConsoleLines() {
		if !strings.HasPrefix(l, "LMNT: ") || strings.ContainsAny(l, "\r\n") || strings.Contains(l, "://") {
			t.Errorf("console line %q: want one \"LMNT: \" line without a URL", l)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(l, s) {
				t.Errorf("console line contains a secret (%.8s…): %q", s, l)
			}
		}
	}
}

func TestBedClearConfirmationThroughTheDaemon(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	printerID := d.Pair()
	gcode := cubeGcode(t)

	// A fresh install: the first job starts without a confirmation.
	first := queueJob(t, d, printerID, gcode)
	secrets := secretsOfJob(t, d, first)
	if j := waitJob(t, d, first); j.State != apitype.JobSucceeded {
		t.Fatalf("first job %+v", j)
	}

	// The print ended: the next one waits and says so in Klipper.
	second := queueJob(t, d, printerID, gcode)
	secrets = append(secrets, secretsOfJob(t, d, second)...)
	waitBedWait(t, d, second)
	d.WaitFor("the console question", func() bool { return consoleHas(d, "LMNT: waiting for LMNT_READY: is the bed clear?") })
	assertConsoleSafe(t, d, secrets)

	// A restart of lmntd does not forget it.
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	d = daemontest.Start(t, daemontest.Options{StateDir: d.StateDir, Sim: d.Sim, HostRoot: d.HostRoot})
	waitBedWait(t, d, second) // the restarted daemon polled and still waits
	d.WaitFor("the question again", func() bool { return consoleHas(d, "LMNT: waiting for LMNT_READY: is the bed clear?") })
	if n := len(d.Standin.Prints()); n != 0 {
		t.Fatalf("Klipper printed %d files before LMNT_READY", n)
	}

	// LMNT_READY in Klipper.
	if err := d.Standin.SendReady(nil); err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, d, second); j.State != apitype.JobSucceeded {
		t.Fatalf("second job after LMNT_READY %+v", j)
	}

	// The next one waits again, until `lmnt ready` (the API).
	third := queueJob(t, d, printerID, gcode)
	secrets = append(secrets, secretsOfJob(t, d, third)...)
	waitBedWait(t, d, third)
	if r := d.Call(http.MethodPost, "/lmnt/v1/ready", nil); r.Status != http.StatusOK {
		t.Fatalf("ready: %d %s", r.Status, r.Body)
	}
	if j := waitJob(t, d, third); j.State != apitype.JobSucceeded {
		t.Fatalf("third job after lmnt ready %+v", j)
	}
	short := func(id string) string { // the engine's console form of an id
		if len(id) >= 20 {
			return id[:8] + "…" + id[len(id)-4:]
		}
		return id
	}
	// Console lines travel to Klipper on their own: the job can be terminal
	// before its last line has arrived.
	finished := "LMNT: finished " + short(third) + ": Print complete"
	d.WaitFor("the finished line on the console", func() bool { return consoleHas(d, finished) })
	for _, want := range []string{
		"LMNT: job received: " + short(third),
		"LMNT: started " + short(third),
		finished,
	} {
		if !consoleHas(d, want) {
			t.Errorf("console lacks %q:\n%s", want, strings.Join(d.Standin.ConsoleLines(), "\n"))
		}
	}
	assertConsoleSafe(t, d, secrets)
}

func TestAutoStartThroughTheDaemon(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{ExtraTOML: "\n[jobs]\nauto_start = true\n"})
	printerID := d.Pair()
	gcode := cubeGcode(t)
	for i := range 2 {
		if j := waitJob(t, d, queueJob(t, d, printerID, gcode)); j.State != apitype.JobSucceeded {
			t.Fatalf("job %d: %+v", i, j)
		}
	}
	if s := snapshot(t, d); !s.AutoStart {
		t.Errorf("snapshot does not show auto_start: %+v", s)
	}
	if consoleHas(d, "LMNT: waiting for LMNT_READY: is the bed clear?") {
		t.Error("auto_start asked for LMNT_READY")
	}
}

func doctorCheck(t *testing.T, d *daemontest.Daemon, name string) apitype.Check {
	t.Helper()
	var r apitype.DoctorReport
	d.Call(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil).JSON(t, &r)
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("doctor has no %q check: %+v", name, r)
	return apitype.Check{}
}

func TestCompatibilityCheckThroughTheDaemon(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{ExtraTOML: "\n[jobs]\nauto_start = true\n"})
	printerID := d.Pair()

	// The test printer.cfg has a 0.4 mm nozzle and no kinematics: doctor
	// lists what jobs cannot be checked against.
	jc := doctorCheck(t, d, "job compatibility")
	for _, want := range []string{"x: [printer] kinematics is not set", "z: [printer] kinematics is not set",
		"filament_type: no filament type configured (jobs.filament_type in lmntd.toml)"} {
		if jc.Result != apitype.CheckOK || !strings.Contains(jc.Detail, want) {
			t.Errorf("doctor job compatibility %+v lacks %q", jc, want)
		}
	}
	if strings.Contains(jc.Detail, "nozzle_diameter:") {
		t.Errorf("doctor says the nozzle is unknown: %q", jc.Detail)
	}

	// The owner fits a 0.6 mm nozzle and says so in printer.cfg: the
	// watcher picks it up, and a job sliced for 0.4 mm fails before
	// Klipper sees it.
	cfg := fmt.Sprintf("[printer]\nkinematics: cartesian\n\n[stepper_x]\nposition_max: 235\n[stepper_y]\nposition_max: 235\n[stepper_z]\nposition_max: 250\n\n"+
		"[extruder]\nnozzle_diameter: 0.6\n\n[virtual_sdcard]\npath: /tmp\n\n[%s]\n%s: %s\n\n[%s]\n\n%s\n",
		klippercfg.SectionBridge, klippercfg.BridgeSocketOption, d.Bridge, klippercfg.SectionSecurePrint, klippercfg.MacroSnippet)
	tmp := d.PrinterCfg + ".new"
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, d.PrinterCfg); err != nil { // as editors save
		t.Fatal(err)
	}
	d.WaitFor("the new printer.cfg", func() bool {
		return !strings.Contains(doctorCheck(t, d, "job compatibility").Detail, "kinematics")
	})
	id := queueJob(t, d, printerID, cubeGcode(t))
	secrets := secretsOfJob(t, d, id)
	j := waitJob(t, d, id)
	const want = "Not compatible with this printer: sliced for a 0.4 mm nozzle, but the printer has a 0.6 mm nozzle (nozzle_diameter at printer.cfg:12); " +
		"if the nozzle was changed, update printer.cfg and restart Klipper"
	if j.State != apitype.JobFailed || j.Message != want {
		t.Fatalf("job ended %s %q, want failed %q", j.State, j.Message, want)
	}
	if n := len(d.Standin.Prints()); n != 0 {
		t.Fatalf("an incompatible job reached Klipper (%d prints)", n)
	}
	d.WaitFor("the failure report", func() bool {
		h := d.Sim.StatusHistory(id)
		return len(h) > 0 && h[len(h)-1].Status == jobstatus.Failure && h[len(h)-1].Message == want
	})
	d.WaitFor("the console line", func() bool {
		for _, l := range d.Standin.ConsoleLines() {
			if strings.HasPrefix(l, "LMNT: failed ") && strings.HasSuffix(l, ": "+want) {
				return true
			}
		}
		return false
	})
	// The download and decryption showed their progress on the way.
	progress := 0
	for _, l := range d.Standin.ConsoleLines() {
		if strings.HasPrefix(l, "LMNT: downloading ") && strings.HasSuffix(l, "%") {
			progress++
		}
	}
	if progress == 0 || progress > 9 {
		t.Errorf("%d progress lines, want 1…9:\n%s", progress, strings.Join(d.Standin.ConsoleLines(), "\n"))
	}
	assertConsoleSafe(t, d, secrets)
}

package daemon_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/seal"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// TestRestartWhenIdleWaitsForThePrint: a restart request during a print
// waits for the print to end, then Run returns ErrRestartRequested (exit
// 75); the print was never interrupted.
func TestRestartWhenIdleWaitsForThePrint(t *testing.T) {
	gcode := cubeGcode(t)
	d := daemontest.Start(t, daemontest.Options{StandinSpeed: int64(len(gcode)) * 2}) // a half-second print
	printerID := d.Pair()
	job, err := d.Sim.CreateJob(printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.WaitFor("the print to start", func() bool {
		var s apitype.Snapshot
		d.Call("GET", "/lmnt/v1/jobs", nil).JSON(t, &s)
		return s.Active != nil && s.Active.State == apitype.JobPrinting
	})
	var res apitype.RestartResult
	r := d.Call("POST", "/lmnt/v1/restart", map[string]bool{"when_idle": true})
	r.JSON(t, &res)
	if r.Status != http.StatusAccepted || !res.Pending {
		t.Fatalf("restart during a print: %d %s", r.Status, r.Body)
	}
	select {
	case err := <-d.Done():
		d.MarkStopped(err)
		if !errors.Is(err, daemon.ErrRestartRequested) {
			t.Fatalf("Run returned %v, want ErrRestartRequested", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("lmntd did not restart after the print\n%s", d.Log.String())
	}
	prints := d.Standin.Prints()
	if len(prints) != 1 || prints[0].JobID != job.ID || prints[0].FinalState != "complete" || prints[0].BytesRead != int64(len(gcode)) {
		t.Fatalf("the print before the restart: %+v", prints)
	}
}

// TestBrokenSealedKey: a sealed key that no longer unseals is an expected
// state: lmntd runs, says so in STATUS and doctor with what to do, keeps
// the blob, and pairing again makes a new key while keeping the old blob.
func TestBrokenSealedKey(t *testing.T) {
	first := daemontest.Start(t, daemontest.Options{NoStandin: true})
	var k1 apitype.KeysInfo
	first.Call("GET", "/lmnt/v1/keys", nil).JSON(t, &k1)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// The software key file replaced: as if the state directory were
	// restored from another printer's backup.
	keyFile := filepath.Join(first.StateDir, seal.SoftwareKeyFileName)
	if err := os.WriteFile(keyFile, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(filepath.Join(first.StateDir, seal.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, StateDir: first.StateDir, HostRoot: first.HostRoot, Sim: first.Sim})
	var st apitype.Status
	d.Call("GET", "/lmnt/v1/status", nil).JSON(t, &st)
	if st.Key.State != "broken" || !strings.HasPrefix(st.Summary, "sealed key does not unseal: ") || st.Key.Advice == "" || st.Health != apitype.HealthBroken {
		t.Fatalf("status with a broken key: %+v", st)
	}
	var doc apitype.DoctorReport
	d.Call("GET", "/lmnt/v1/doctor?offline=1", nil).JSON(t, &doc)
	if doc.Health != apitype.HealthBroken || checkResult(doc, "printer key") != apitype.CheckFail {
		t.Fatalf("doctor with a broken key: %+v", doc)
	}
	if got, _ := os.ReadFile(filepath.Join(d.StateDir, seal.KeyFileName)); string(got) != string(blob) {
		t.Fatal("the unreadable blob was changed")
	}
	d.Pair()
	var k2 apitype.KeysInfo
	d.Call("GET", "/lmnt/v1/keys", nil).JSON(t, &k2)
	if k2.State != "ok" || k2.KeyID == k1.KeyID {
		t.Fatalf("after pairing again: %+v (old key %s)", k2, k1.KeyID)
	}
	retired, _ := filepath.Glob(filepath.Join(d.StateDir, seal.KeyFileName+".retired-*"))
	if len(retired) != 1 {
		t.Fatalf("the old blob was not kept: %v", retired)
	}
	if got, _ := os.ReadFile(retired[0]); string(got) != string(blob) {
		t.Fatal("the retired blob differs from the old one")
	}
}

// TestLegacyRegistration: the legacy flow (user_login, register_printer)
// in the original shapes, without printer_token in the answer.
func TestLegacyRegistration(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	if _, err := sim.AddUser("owner@example.com", "s3cret-pw"); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Options{Sim: sim, Profile: "legacy", NoStandin: true})
	if r := d.Call("POST", "/machine/lmnt_marketplace/pair/start", nil); r.Status != 400 {
		t.Fatalf("pairing by code on the legacy profile: %d %s", r.Status, r.Body)
	}
	if r := d.Call("POST", "/machine/lmnt_marketplace/user_login", map[string]string{"username": "owner@example.com", "password": "wrong"}); r.Status != 400 {
		t.Fatalf("wrong password: %d %s", r.Status, r.Body)
	}
	var login apitype.LoginResult
	d.Call("POST", "/machine/lmnt_marketplace/user_login", map[string]string{"username": "owner@example.com", "password": "s3cret-pw"}).JSON(t, &login)
	if login.Token == "" {
		t.Fatal("user_login returned no token")
	}
	r := d.Call("POST", "/machine/lmnt_marketplace/register_printer", map[string]string{"user_token": login.Token,
		"printer_name": "Legacy printer", "manufacturer": "Prusa", "model": "MK3"})
	var reg map[string]any
	r.JSON(t, &reg)
	if r.Status != 200 || reg["id"] == "" || reg["printer_name"] != "Legacy printer" || reg["token_expires"] == nil {
		t.Fatalf("register_printer: %d %s", r.Status, r.Body)
	}
	token := storedToken(t, d.StateDir)
	for _, key := range []string{"printer_token", "token"} {
		if _, ok := reg[key]; ok {
			t.Errorf("register_printer answer has %q", key)
		}
	}
	if strings.Contains(string(r.Body), token) {
		t.Error("register_printer answer contains the printer token")
	}
	var st apitype.Status
	d.Call("GET", "/lmnt/v1/status", nil).JSON(t, &st)
	if !st.Auth.Authenticated || st.Printer.Name != "Legacy printer" {
		t.Fatalf("status after registration: %+v", st)
	}
}

// TestLiveReload: api.allowed_hosts edited in lmntd.toml applies without a
// restart; an edit putting loopback into trusted_clients is reported and
// the loopback entry never honoured.
func TestLiveReload(t *testing.T) {
	addr := testutil.FreePort(t)
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, HTTPListen: addr, APIKey: "k3y"})
	hc := &http.Client{Timeout: 5 * time.Second}
	status := func() int {
		req, err := http.NewRequest("GET", "http://"+addr+"/lmnt/v1/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "printer.example.com"
		req.Header.Set("X-Api-Key", "k3y")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(); s != 403 {
		t.Fatalf("before the edit: %d", s)
	}
	orig, err := os.ReadFile(d.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	save := func(apiLine string) { // an editor's save
		edited := strings.Replace(string(orig), "[api]\n", "[api]\n"+apiLine+"\n", 1)
		tmp := d.ConfigFile + ".new"
		if err := os.WriteFile(tmp, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, d.ConfigFile); err != nil {
			t.Fatal(err)
		}
	}
	save(`trusted_clients = ["127.0.0.1/32"]`)
	d.WaitFor("the loopback entry to be reported", func() bool {
		return strings.Contains(d.Log.String(), "api.trusted_clients: 127.0.0.1/32 includes loopback")
	})
	save(`allowed_hosts = ["printer.example.com"]`)
	d.WaitFor("allowed_hosts to apply", func() bool { return status() == 200 })
}

// TestPairingPageEscapes: what the page shows comes from callers and the
// marketplace; html/template must escape it.
func TestPairingPageEscapes(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{NoStandin: true})
	evil := `<img src=x onerror=alert(1)>"</script>`
	r := d.Call("POST", "/machine/lmnt_marketplace/pair/start", map[string]string{"printer_name": evil})
	var p apitype.Pairing
	r.JSON(t, &p)
	if _, err := d.Sim.ApprovePairing(p.PairingCode, ""); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("paired", func() bool {
		d.Call("GET", "/machine/lmnt_marketplace/pair/status", nil).JSON(t, &p)
		return p.Status == "paired"
	})
	page := string(d.Call("GET", "/machine/lmnt_marketplace/ui", nil).Body)
	if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Fatalf("the printer name is not escaped:\n%s", page)
	}
}

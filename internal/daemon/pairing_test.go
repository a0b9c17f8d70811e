package daemon_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// TestPendingPairingSurvivesRestart: the owner reads the code, lmntd
// restarts before the code is typed in, the owner approves it: lmntd
// resumes waiting and pairs, under the name given before the restart; the
// session file is private while it exists and gone once paired.
func TestPendingPairingSurvivesRestart(t *testing.T) {
	first := daemontest.Start(t, daemontest.Options{NoStandin: true})
	var p apitype.Pairing
	r := first.Call(http.MethodPost, "/machine/lmnt_marketplace/pair/start", apitype.PairRequest{PrinterName: "Workshop MK4"})
	if r.Status != http.StatusOK {
		t.Fatalf("pair/start: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &p)
	file := filepath.Join(first.StateDir, "pairing-pending.json")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("the pending session was not recorded: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", file, fi.Mode().Perm())
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("stopping lmntd dropped the pending session: %v", err)
	}

	d := daemontest.Start(t, daemontest.Options{NoStandin: true, StateDir: first.StateDir, HostRoot: first.HostRoot, Sim: first.Sim})
	var again apitype.Pairing
	d.Call(http.MethodGet, "/machine/lmnt_marketplace/pair/status", nil).JSON(t, &again)
	if again.Status != "pending" || again.PairingCode != p.PairingCode {
		t.Fatalf("after the restart: %+v, want pending with code %s", again, p.PairingCode)
	}
	id, err := d.Sim.ApprovePairing(p.PairingCode, "")
	if err != nil {
		t.Fatal(err)
	}
	d.WaitFor("paired after the restart", func() bool {
		d.Call(http.MethodGet, "/machine/lmnt_marketplace/pair/status", nil).JSON(t, &again)
		return again.Status == "paired"
	})
	if again.PrinterID != id || again.PrinterName != "Workshop MK4" {
		t.Errorf("paired as %s (%q), want %s (Workshop MK4)", again.PrinterID, again.PrinterName, id)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the session file outlived the pairing: %v", err)
	}

	// Pairing again without a name keeps the printer's name.
	r = d.Call(http.MethodPost, "/machine/lmnt_marketplace/pair/start", apitype.PairRequest{Force: true})
	r.JSON(t, &again)
	if r.Status != http.StatusOK || again.PrinterName != "Workshop MK4" {
		t.Errorf("pairing again: %d %+v, want the name Workshop MK4 kept", r.Status, again)
	}
}

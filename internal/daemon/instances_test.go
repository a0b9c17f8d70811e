package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// TestTwoInstancesStayApart runs two lmntd on one host (same machine
// identity, one marketplace) as a farm's two Klipper instances: each pairs
// as its own printer with its own key, each prints its own job on its own
// Klipper, and a job sealed for printer 1 handed to printer 2 never reaches
// printer 2's Klipper (its key cannot open it). Removing instance 2 leaves
// instance 1 paired and printing.
func TestTwoInstancesStayApart(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	auto := "[jobs]\nauto_start = true\n"
	d1 := daemontest.Start(t, daemontest.Options{Sim: sim, ExtraTOML: auto})
	d2 := daemontest.Start(t, daemontest.Options{Sim: sim, ExtraTOML: auto, HostRoot: d1.HostRoot})
	id1, id2 := d1.Pair(), d2.Pair()
	if id1 == id2 {
		t.Fatalf("both instances paired as printer %s", id1)
	}
	var k1, k2 apitype.KeysInfo
	d1.Call(http.MethodGet, "/lmnt/v1/keys", nil).JSON(t, &k1)
	d2.Call(http.MethodGet, "/lmnt/v1/keys", nil).JSON(t, &k2)
	if k1.PublicKey == "" || k1.PublicKey == k2.PublicKey || k1.KeyID == k2.KeyID {
		t.Fatalf("instances share a key: %s / %s", k1.KeyID, k2.KeyID)
	}

	gcode := cubeGcode(t)
	sum := sha256.Sum256(gcode)
	j1, err := sim.CreateJob(id1, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := sim.CreateJob(id2, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d  *daemontest.Daemon
		id string
	}{{d1, j1.ID}, {d2, j2.ID}} {
		if j := waitJobWithin(t, c.d, c.id, 30*time.Second); j.State != apitype.JobSucceeded {
			t.Fatalf("job %s ended %s: %s", c.id, j.State, j.Message)
		}
		assertPrinted(t, c.d, c.id, hex.EncodeToString(sum[:]), len(gcode))
	}
	neverPrinted := func(d *daemontest.Daemon, id string) {
		t.Helper()
		for _, p := range d.Standin.Prints() {
			if p.JobID == id {
				t.Fatalf("%s reached the other instance's Klipper", id)
			}
		}
		var s apitype.Snapshot
		d.Call(http.MethodGet, "/lmnt/v1/jobs", nil).JSON(t, &s)
		for _, j := range append(s.Finished, s.Queue...) {
			if j.ID == id {
				t.Fatalf("%s is in the other instance's journal", id)
			}
		}
	}
	neverPrinted(d2, j1.ID)
	neverPrinted(d1, j2.ID)

	// Printer 1's sealed job handed to printer 2 directly: refused by its key.
	dek, iv, ct := dekEncrypt(t, k1.PublicKey, gcode)
	body, hdr := multipartUpload(t, "cube.gcode.enc", ct, "gcode_dek_package", dek, "gcode_iv_hex", iv)
	resp := daemontest.Do(t, d2.Client, http.MethodPost, "http://lmntd/machine/encrypted_print/start_print", body, hdr)
	var sp struct {
		JobID string `json:"job_id"`
	}
	resp.JSON(t, &sp)
	if resp.Status != http.StatusOK || sp.JobID == "" {
		t.Fatalf("start_print on printer 2: %d %s", resp.Status, resp.Body)
	}
	if j := waitJobWithin(t, d2, sp.JobID, 30*time.Second); j.State != apitype.JobFailed {
		t.Fatalf("printer 1's job on printer 2 ended %s: %s", j.State, j.Message)
	}
	for _, p := range d2.Standin.Prints() {
		if p.JobID == sp.JobID || p.SHA256 == hex.EncodeToString(sum[:]) && p.JobID != j2.ID {
			t.Fatalf("printer 1's job reached printer 2's Klipper: %+v", p)
		}
	}

	// Removing instance 2 (stopped, its state deleted) leaves instance 1
	// paired, with its key, printing.
	if err := d2.Stop(); err != nil {
		t.Fatalf("stopping instance 2: %v", err)
	}
	if err := os.RemoveAll(d2.StateDir); err != nil {
		t.Fatal(err)
	}
	var after apitype.KeysInfo
	d1.Call(http.MethodGet, "/lmnt/v1/keys", nil).JSON(t, &after)
	if after.KeyID != k1.KeyID {
		t.Fatalf("instance 1's key changed from %s to %s", k1.KeyID, after.KeyID)
	}
	j3, err := sim.CreateJob(id1, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJobWithin(t, d1, j3.ID, 30*time.Second); j.State != apitype.JobSucceeded {
		t.Fatalf("instance 1 after instance 2's removal: job ended %s: %s", j.State, j.Message)
	}
	assertPrinted(t, d1, j3.ID, hex.EncodeToString(sum[:]), len(gcode))
}

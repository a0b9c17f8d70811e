package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// TestRealWorldVariety runs lmntd against the simulator in its Varying
// mode: pairing answers with expiries in odd forms, polls whose entries
// vary every optional field's shape (timestamps as ISO with and without
// zone, epoch seconds and milliseconds, Firestore objects, null; ids as
// numbers; unknown types; extra fields) next to entries no client can use.
// Every real job of those polls prints, whatever its download route: a
// storage host (without the token), Google and Firebase storage (through
// the proxy), the marketplace host, no URL at all (get-print-job), and a
// second LMNT host that needs the printer token and is not a token host
// (401, then the proxy fallback). The simulator's record shows the token
// never reached the storage host or the second LMNT host.
func TestRealWorldVariety(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond, Varying: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	d := daemontest.Start(t, daemontest.Options{Sim: sim, ExtraTOML: "[jobs]\nauto_start = true\n"})
	printerID := d.Pair()

	gcode := cubeGcode(t)
	sum := sha256.Sum256(gcode)
	kinds := []marketsim.DownloadKind{marketsim.DownloadStorage, marketsim.DownloadGCS, marketsim.DownloadFirebase,
		marketsim.DownloadMarketplace, marketsim.DownloadNone, marketsim.DownloadLMNTHost}
	var ids []string
	for _, k := range kinds {
		job, err := sim.CreateJob(printerID, gcode, marketsim.JobOptions{Download: k})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.ID)
	}
	for i, id := range ids {
		j := waitJobWithin(t, d, id, 60*time.Second)
		if j.State != apitype.JobSucceeded {
			t.Fatalf("job %s (%s) ended %s: %s\n%s", id, kinds[i], j.State, j.Message, d.Log.String())
		}
		assertPrinted(t, d, id, hex.EncodeToString(sum[:]), len(gcode))
	}
	for _, id := range ids {
		d.WaitFor("the marketplace to hear "+id+" succeed", func() bool {
			h := sim.StatusHistory(id)
			return len(h) > 0 && h[len(h)-1].Status == "success"
		})
	}

	// The entries no client can use were skipped, each named.
	log := d.Log.String()
	for _, want := range []string{
		`msg="marketplace: poll entry skipped"`,
		`field=print_job_id problem=missing`,
		`problem="entry is a string, not an object"`,
		`field=gcode_dek_encrypted_hex problem="is the number 12345, not a string"`,
		`msg="marketplace: direct download refused, retrying through the download proxy"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	var snap apitype.Snapshot
	d.Call(http.MethodGet, "/lmnt/v1/jobs", nil).JSON(t, &snap)
	if len(snap.Finished) != len(ids) || len(snap.Queue) != 0 || snap.Active != nil {
		t.Errorf("jobs: %d finished, %d queued, active %v; want exactly the %d real jobs", len(snap.Finished), len(snap.Queue), snap.Active, len(ids))
	}

	// Where the printer token went: the API host only.
	var lmntHostRequests int
	for _, p := range sim.TokenPresentations() {
		if p.Host == "lmnt-host" {
			lmntHostRequests++
		}
		if p.Kind == "printer" && p.Host != "api" {
			t.Errorf("the printer token reached the %s host (%s)", p.Host, p.Path)
		}
	}
	if lmntHostRequests != 0 {
		t.Errorf("a token was presented to the second LMNT host %d times (it is not in token_hosts)", lmntHostRequests)
	}
	if auth := sim.StorageAuthorizations(); len(auth) != 0 {
		t.Errorf("storage or push host got Authorization %q", auth)
	}
	if n := sim.Calls(marketsim.CallStorage); n == 0 {
		t.Error("the storage job never reached the storage host")
	}

	// lmnt status and doctor name the API profile.
	var st apitype.Status
	d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
	if st.Profile != "current" || st.ProfileReason == "" {
		t.Errorf("status: profile %q (%q)", st.Profile, st.ProfileReason)
	}
	var rep apitype.DoctorReport
	d.Call(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil).JSON(t, &rep)
	found := false
	for _, c := range rep.Checks {
		if c.Name == "api profile" && strings.HasPrefix(c.Detail, "current (") {
			found = true
		}
	}
	if !found {
		t.Errorf("doctor has no api profile check: %+v", rep.Checks)
	}
}

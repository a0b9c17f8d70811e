package daemon_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// The fleet tests run N real daemons (in-process, each with its own state
// directory, key, Klipper stand-in and marketplace client) against one
// simulator, with production settings (check_interval 60 s, push on) in
// scaled time: daemon.Options.TimeScale divides every wait of the
// marketplace loops and the status outbox, and the tests divide their
// windows and bounds by the same factor. Jitter comes from per-printer
// seeded generators so the run is reproducible; the seeds are the first
// five, not chosen for their draws.

const fleetSize = 5

// fleet is N paired daemons on one simulator.
type fleet struct {
	t       *testing.T
	sim     *marketsim.Server
	scale   float64
	ds      []*daemontest.Daemon
	ids     []string
	started []time.Time // when each daemon's current run began
}

// createJobs buys gcode for every printer of the fleet; the job ids are in
// the printers' order.
func (f *fleet) createJobs(gcode []byte) []string {
	f.t.Helper()
	var ids []string
	for _, id := range f.ids {
		j, err := f.sim.CreateJob(id, gcode, marketsim.JobOptions{})
		if err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	return ids
}

// simDur converts simulated time to real time.
func (f *fleet) simDur(d time.Duration) time.Duration { return time.Duration(float64(d) / f.scale) }

func (f *fleet) options(i int, base daemontest.Options) daemontest.Options {
	base.Sim, base.CheckInterval, base.TimeScale = f.sim, "60s", f.scale
	base.Jitter = rand.New(rand.NewPCG(uint64(i+1), 22)).Float64
	return base
}

func newFleet(t *testing.T, scale float64, o daemontest.Options) *fleet {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	f := &fleet{t: t, sim: sim, scale: scale}
	for i := range fleetSize {
		f.started = append(f.started, time.Now())
		d := daemontest.Start(t, f.options(i, o))
		f.ds = append(f.ds, d)
		f.ids = append(f.ids, d.Pair())
	}
	return f
}

// restart stops every daemon, then starts them all again on their state
// (a fleet restarted together: an upgrade wave, a power cut).
func (f *fleet) restart(o daemontest.Options) {
	for _, d := range f.ds {
		if err := d.Stop(); err != nil {
			f.t.Fatal(err)
		}
	}
	for i, old := range f.ds {
		o := f.options(i, o)
		o.StateDir, o.HostRoot = old.StateDir, old.HostRoot
		f.started[i] = time.Now()
		f.ds[i] = daemontest.Start(f.t, o)
	}
}

// requests is printer i's log entries of calls in [from, to), push
// streams excluded unless push.
func (f *fleet) requests(i int, from, to time.Time, calls ...marketsim.Call) []marketsim.Request {
	var out []marketsim.Request
	for _, r := range f.sim.Requests() {
		if r.Printer == f.ids[i] && !r.At.Before(from) && r.At.Before(to) && (len(calls) == 0 || slices.Contains(calls, r.Call)) {
			out = append(out, r)
		}
	}
	return out
}

var apiCalls = []marketsim.Call{marketsim.CallRefresh, marketsim.CallPoll, marketsim.CallJobDetails,
	marketsim.CallDownload, marketsim.CallJobStatus}

func (f *fleet) waitAll(what string, within time.Duration, cond func(i int) bool) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for i, d := range f.ds {
		d.WaitWithin(time.Until(deadline), fmt.Sprintf("printer %d: %s", i, what), func() bool { return cond(i) })
	}
}

func finalStatus(sim *marketsim.Server, jobID string) (marketsim.StatusPost, bool) {
	h := sim.StatusHistory(jobID)
	for _, p := range h {
		if p.Status == "success" || p.Status == "failure" {
			return p, true
		}
	}
	return marketsim.StatusPost{}, false
}

// A fleet restarted together spreads its polls over the interval, makes
// at most one request per printer per 5 minutes besides the push stream
// while idle, pays a bounded price for a flapping push stream, and a
// one-minute burst of refused refreshes un-pairs nobody.
func TestFleetIdleFlappingAndRefreshBurst(t *testing.T) {
	const scale = 60 // one simulated minute per real second
	f := newFleet(t, scale, daemontest.Options{})
	gcode := cubeGcode(t)
	f.restart(daemontest.Options{})

	// Idle: 10 simulated minutes.
	time.Sleep(f.simDur(10 * time.Minute))
	interval := f.simDur(time.Minute) // check_interval
	var offsets []time.Duration
	for i := range f.ds {
		from := f.started[i]
		to := from.Add(f.simDur(10 * time.Minute))
		n := len(f.requests(i, from, to, apiCalls...))
		t.Logf("printer %d: %d requests besides push in 10 simulated minutes after the restart", i, n)
		if n > 2 {
			t.Errorf("printer %d: %d requests besides push in 10 minutes, want ≤ 1 per 5 minutes: %+v", i, n, f.requests(i, from, to, apiCalls...))
		}
		push, polls := f.requests(i, from, to, marketsim.CallPush), f.requests(i, from, to, marketsim.CallPoll)
		if len(push) == 0 || len(polls) == 0 {
			t.Fatalf("printer %d: no push stream (%d) or no poll (%d) after the restart", i, len(push), len(polls))
		}
		// The loops start when the daemon does; the push stream connects
		// at once, the first poll after the random delay.
		offsets = append(offsets, polls[0].At.Sub(push[0].At))
	}
	spread := slices.Max(offsets) - slices.Min(offsets)
	t.Logf("first polls after start: %v (spread %v of a %v interval)", offsets, spread, interval)
	if spread < interval/2 {
		t.Errorf("first polls spread over %v, want ≥ half the %v interval: %v", spread, interval, offsets)
	}

	// Flapping: every stream sends its first put, then closes.
	f.sim.SetFault(marketsim.CallPush, marketsim.Fault{Drop: true})
	f.sim.DropPushStreams()
	flapStart := time.Now()
	time.Sleep(f.simDur(5 * time.Minute))
	flapEnd := time.Now()
	for i := range f.ds {
		push := len(f.requests(i, flapStart, flapEnd, marketsim.CallPush))
		other := len(f.requests(i, flapStart, flapEnd, apiCalls...))
		t.Logf("printer %d, flapping push for 5 simulated minutes: %d stream connections, %d other requests", i, push, other)
		// Backoff 1, 2, 4 … s: 9 connections in 5 minutes; polls at
		// check_interval with ±50 % jitter: at most 10.
		if push > 12 || other > 10 {
			t.Errorf("printer %d: flapping push cost %d connections and %d requests in 5 minutes", i, push, other)
		}
	}
	f.sim.ClearFaults()
	f.sim.DropPushStreams() // the flapping streams' last reconnect may still be held
	clear := time.Now()
	f.waitAll("the push stream back", f.simDur(10*time.Minute), func(i int) bool {
		return len(f.requests(i, clear, time.Now().Add(time.Hour), marketsim.CallPush)) > 0
	})

	// One minute of refused refreshes while every token has expired: each
	// printer's poll gets 401, its refresh 401, and it keeps retrying.
	for _, id := range f.ids {
		f.sim.ExpireTokens(id)
	}
	f.sim.SetFaultFor(marketsim.CallRefresh, marketsim.Fault{Status: http.StatusUnauthorized}, f.simDur(time.Minute))
	burst := time.Now()
	jobIDs := f.createJobs(gcode)
	f.waitAll("the job printed after the burst", f.simDur(15*time.Minute), func(i int) bool {
		p, ok := finalStatus(f.sim, jobIDs[i])
		return ok && p.Status == "success"
	})
	refused := 0
	for i, d := range f.ds {
		var st apitype.Status
		d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
		if st.Auth.PairingLost || !st.Auth.Authenticated {
			t.Errorf("printer %d lost its pairing over a one-minute refresh burst: %+v", i, st.Auth)
		}
		for _, r := range f.requests(i, burst, burst.Add(f.simDur(time.Minute)), marketsim.CallRefresh) {
			if r.Status == http.StatusUnauthorized {
				refused++
			}
		}
	}
	if refused == 0 {
		t.Error("no refresh was refused during the burst: the test did not exercise the 401 policy")
	}
	t.Logf("%d refreshes refused during the burst; nobody un-paired", refused)
}

// After a 3-minute outage of the marketplace API, the final status of
// every print that ended during it arrives within 10 s of the recovery.
func TestFleetOutageDeliversFinalStatuses(t *testing.T) {
	const scale = 12 // one simulated minute per 5 real seconds
	gcode := cubeGcode(t)
	// A print of about 1.5 simulated minutes.
	speed := int64(float64(len(gcode)) * scale / 90)
	f := newFleet(t, scale, daemontest.Options{StandinSpeed: speed})
	jobIDs := f.createJobs(gcode)
	f.waitAll("every print started", f.simDur(time.Minute), func(i int) bool {
		return slices.ContainsFunc(f.sim.StatusHistory(jobIDs[i]), func(p marketsim.StatusPost) bool { return p.Status == "printing" })
	})
	outage := 3 * time.Minute
	f.sim.SetOutage(http.StatusServiceUnavailable, f.simDur(outage))
	back := time.Now().Add(f.simDur(outage))
	time.Sleep(time.Until(back))
	bound := f.simDur(10 * time.Second)
	f.waitAll("the final status", bound+f.simDur(5*time.Minute), func(i int) bool { _, ok := finalStatus(f.sim, jobIDs[i]); return ok })
	for i, id := range jobIDs {
		p, _ := finalStatus(f.sim, id)
		late := p.At.Sub(back)
		t.Logf("printer %d: final status %q %.1f simulated s after the recovery", i, p.Status, late.Seconds()*scale)
		if p.Status != "success" {
			t.Errorf("printer %d: final status %q", i, p.Status)
		}
		if late < 0 {
			t.Errorf("printer %d: the print ended before the outage (%v): the test did not exercise it", i, late)
		}
		if late > bound {
			t.Errorf("printer %d: final status %.1f simulated s after the recovery, want ≤ 10 s", i, late.Seconds()*scale)
		}
	}
}

// Refused refreshes degrade lmnt status, doctor and STATUS= with the
// reason, without un-pairing; an accepted refresh makes them healthy again.
func TestRefusedRefreshDegradesStatus(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	id := d.Pair()
	d.Sim.ExpireTokens(id) // polls now get 401 and refresh
	d.Sim.SetFault(marketsim.CallRefresh, marketsim.Fault{Status: http.StatusUnauthorized})
	var st apitype.Status
	d.WaitFor("a refused refresh in the status", func() bool {
		d.Call(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil)
		d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
		return st.Auth.Problem != ""
	})
	if st.Health != apitype.HealthDegraded || st.Auth.PairingLost || !strings.Contains(st.Auth.Problem, "refused the token refresh") ||
		!strings.Contains(st.Summary, "degraded: the marketplace refused the token refresh") {
		t.Fatalf("status while refreshes are refused: health %s, summary %q, auth %+v", st.Health, st.Summary, st.Auth)
	}
	var doc apitype.DoctorReport
	d.Call(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil).JSON(t, &doc)
	if checkResult(doc, "pairing") != apitype.CheckWarn {
		t.Fatalf("doctor while refreshes are refused: %+v", doc.Checks)
	}
	d.Sim.ClearFaults()
	d.WaitFor("healthy again after an accepted refresh", func() bool {
		d.Call(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil)
		st = apitype.Status{} // absent fields must not keep their old values
		d.Call(http.MethodGet, "/lmnt/v1/status", nil).JSON(t, &st)
		return st.Auth.Problem == "" && st.Auth.Authenticated && st.Health == apitype.HealthOK
	})
}

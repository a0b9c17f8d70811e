package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// crashChildEnv names the file with a child daemon's configuration. When it
// is set, the test binary runs as that daemon (see TestMain) until killed.
const crashChildEnv = "LMNTD_JOBS_CRASH_CHILD"

type childConfig struct {
	Daemon    daemonConfig
	AutoStart bool
	// BlockCheck makes the compatibility check hang, holding the job in
	// the ready state.
	BlockCheck bool
}

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(runCrashChild(path))
	}
	os.Exit(m.Run())
}

// runCrashChild is the daemon of the crash tests: the engine on the real
// clock, polling the simulator, until SIGKILL.
func runCrashChild(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var cfg childConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d, err := startDaemon(cfg.Daemon, clock.System{}, func(o *Options) {
		o.AutoStart = cfg.AutoStart
		if cfg.BlockCheck {
			o.Check = func(ctx context.Context, _ string, _ *gcode.Metadata) error { <-ctx.Done(); return ctx.Err() }
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if js, err := d.client.Poll(ctx); err == nil {
			d.eng.Offer(adapters.Offers(js))
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
}

// journaled reads the job's state from its journal record on disk.
func journaled(t *testing.T, stateDir, id string) (Record, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "jobs", id+".json"))
	if err != nil {
		return Record{}, false
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("journal record of %s: %v", id, err)
	}
	return r, true
}

// TestKill9InEveryState kills the daemon (a child process running the
// engine) with SIGKILL while a job is in each state, restarts it on the same
// state directory and checks that the job is neither lost nor printed twice
// and gets exactly one terminal report.
func TestKill9InEveryState(t *testing.T) {
	type tc struct {
		name  string
		speed int64 // of the stand-in
		child childConfig
		// setup runs before the child starts.
		setup func(w *world)
		// reached tells when to kill the child.
		reached func(w *world, id string, r Record) bool
		// whileDown runs after the kill, before the restart.
		whileDown func(w *world)
		// afterRestart drives the job to its end.
		afterRestart func(w *world, d *daemon, id string)
		want         State
		wantMsg      string // in the job's final message, when set
		prints       int    // how many times Klipper printed the job in total
	}
	klipperPrinting := func(w *world, id string) bool {
		st := w.klipper.Status()
		return st.PrintStats.Filename == VirtualName(id) && st.PrintStats.State == standin.StatePrinting
	}
	cancelInKlipper := func(w *world, d *daemon, id string) {
		d.waitJob(w.t, id, "recovered as printing", func(j JobInfo) bool { return j.State == Printing })
		if err := w.klipper.Cancel(); err != nil {
			w.t.Fatal(err)
		}
	}
	recordPath := func(w *world) string {
		ents, err := os.ReadDir(filepath.Join(w.stateDir, "jobs"))
		if err != nil {
			w.t.Fatal(err)
		}
		for _, e := range ents {
			if filepath.Ext(e.Name()) == ".json" {
				return filepath.Join(w.stateDir, "jobs", e.Name())
			}
		}
		w.t.Fatal("no journal record")
		return ""
	}
	// truncate damages the job's record the way a failing SD card or a
	// careless hand does.
	truncate := func(w *world) {
		p := recordPath(w)
		if err := os.Truncate(p, 7); err != nil {
			w.t.Fatal(err)
		}
	}
	// unreadable makes the record a file lmntd cannot read: mode 000, or,
	// for root (whom modes do not stop), a directory in its place.
	unreadable := func(w *world) {
		p := recordPath(w)
		if os.Geteuid() != 0 {
			if err := os.Chmod(p, 0); err != nil {
				w.t.Fatal(err)
			}
			return
		}
		if err := os.Remove(p); err != nil {
			w.t.Fatal(err)
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			w.t.Fatal(err)
		}
	}
	bedNotClear := func(w *world) {
		if err := SaveBed(w.stateDir, BedState{Clear: false}); err != nil {
			w.t.Fatal(err)
		}
	}
	cases := []tc{
		{name: "accepted", child: childConfig{AutoStart: false},
			setup: func(w *world) {
				if err := SaveBed(w.stateDir, BedState{Clear: false}); err != nil {
					w.t.Fatal(err)
				}
			},
			reached: func(w *world, id string, r Record) bool { return r.State == Accepted && len(r.Pending) == 0 },
			want:    Succeeded, prints: 1},
		{name: "downloading", child: childConfig{AutoStart: true},
			setup:     func(w *world) { w.sim.SetFault(marketsim.CallDownload, marketsim.Fault{Silent: true}) },
			reached:   func(w *world, id string, r Record) bool { return r.State == Downloading },
			whileDown: func(w *world) { w.sim.ClearFaults() },
			want:      Succeeded, prints: 1},
		{name: "ready", child: childConfig{AutoStart: true, BlockCheck: true},
			reached: func(w *world, id string, r Record) bool { return r.State == Ready },
			want:    Succeeded, prints: 1},
		{name: "printing", speed: 1, child: childConfig{AutoStart: true},
			reached:      func(w *world, id string, r Record) bool { return r.State == Printing && klipperPrinting(w, id) },
			afterRestart: cancelInKlipper,
			want:         Cancelled, prints: 1},
		{name: "paused", speed: 1, child: childConfig{AutoStart: true},
			reached: func(w *world, id string, r Record) bool {
				if r.State == Printing && klipperPrinting(w, id) {
					_ = w.klipper.Pause()
				}
				return r.State == Paused
			},
			afterRestart: func(w *world, d *daemon, id string) {
				d.waitJob(w.t, id, "recovered as paused", func(j JobInfo) bool { return j.State == Paused })
				if err := w.klipper.Resume(); err != nil {
					w.t.Fatal(err)
				}
				cancelInKlipper(w, d, id)
			},
			want: Cancelled, prints: 1},
		{name: "print failed while down", speed: 1, child: childConfig{AutoStart: true},
			reached:   func(w *world, id string, r Record) bool { return r.State == Printing && klipperPrinting(w, id) },
			whileDown: func(w *world) { _ = w.klipper.InjectError("Heater extruder not heating at expected rate") },
			want:      Failed, prints: 1},
		{name: "succeeded, report pending", child: childConfig{AutoStart: true},
			setup: func(w *world) { w.sim.SetFault(marketsim.CallJobStatus, marketsim.Fault{Drop: true}) },
			reached: func(w *world, id string, r Record) bool {
				return r.State == Succeeded && len(r.Pending) > 0
			},
			whileDown: func(w *world) { w.sim.ClearFaults() },
			want:      Succeeded, prints: 1},
		// Issue 15 item 5: a damaged record must not make the job new.
		{name: "printing, record truncated", speed: 1, child: childConfig{AutoStart: true},
			reached:      func(w *world, id string, r Record) bool { return r.State == Printing && klipperPrinting(w, id) },
			whileDown:    truncate,
			afterRestart: cancelInKlipper,
			want:         Cancelled, prints: 1},
		{name: "accepted, record truncated", child: childConfig{AutoStart: false}, setup: bedNotClear,
			reached:   func(w *world, id string, r Record) bool { return r.State == Accepted && len(r.Pending) == 0 },
			whileDown: truncate,
			want:      Failed, wantMsg: DamagedRecord, prints: 0},
		{name: "accepted, record unreadable", child: childConfig{AutoStart: false}, setup: bedNotClear,
			reached:   func(w *world, id string, r Record) bool { return r.State == Accepted && len(r.Pending) == 0 },
			whileDown: unreadable,
			want:      Failed, wantMsg: DamagedRecord, prints: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			w.startKlipper(c.speed)
			if c.setup != nil {
				c.setup(w)
			}
			id := w.createJob(fixtureGcode(t))

			c.child.Daemon = w.daemonConfig()
			cfgPath := filepath.Join(w.dir, "child.json")
			data, _ := json.Marshal(c.child)
			if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashChildEnv+"="+cfgPath)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			reachedState := false
			defer func() {
				if !reachedState {
					r, _ := journaled(t, w.stateDir, id)
					t.Logf("journal %+v\nchild output:\n%s", r, out.String())
				}
			}()
			testutil.Eventually(t, testTimeout, "the child to reach the state", func() bool {
				select {
				case err := <-exited:
					t.Fatalf("child exited early: %v\n%s", err, out.String())
				default:
				}
				r, ok := journaled(t, w.stateDir, id)
				return ok && c.reached(w, id, r)
			})
			reachedState = true
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-exited
			if c.whileDown != nil {
				c.whileDown(w)
			}

			d := w.startDaemon(func(o *Options) {
				// What the poller does when asked.
				o.RequestPoll = func() {}
			})
			if c.afterRestart != nil {
				c.afterRestart(w, d, id)
			}
			j := d.waitJob(t, id, "its end", func(j JobInfo) bool { return j.State.Terminal() && j.PendingReports == 0 })
			if j.State != c.want || !strings.Contains(j.Message, c.wantMsg) {
				t.Fatalf("job ended %s %q, want %s %q\n%s", j.State, j.Message, c.want, c.wantMsg, d.logs.String())
			}
			h := w.waitHistory(id, "a terminal report", hasTerminal)
			if n := terminalCount(h); n != 1 {
				t.Fatalf("%d terminal reports: %s", n, historyString(h))
			}
			n := 0
			for _, p := range w.klipper.Prints() {
				if p.JobID == id {
					n++
				}
			}
			if st := w.klipper.Status(); st.PrintStats.Filename == VirtualName(id) && st.PrintStats.State == standin.StatePrinting {
				n++ // still running (not in Prints yet)
			}
			if n != c.prints {
				t.Fatalf("Klipper printed the job %d times, want %d", n, c.prints)
			}
			// Offered again after the end, it stays finished.
			d.poll(t)
			if s := d.eng.Snapshot(); s.Active != nil || len(s.Queue) != 0 {
				t.Fatalf("finished job came back: %+v", s)
			}
		})
	}
}

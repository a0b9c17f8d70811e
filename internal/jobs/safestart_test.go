package jobs_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// Safe start (issue 11): the bed-clear confirmation, the compatibility
// check against printer.cfg, the console lines and the download progress,
// all through the real bridge, stand-in, pipeline and simulator.

const waitLine = "LMNT: waiting for LMNT_READY: is the bed clear?"

func fixtureNamed(t testing.TB, name string) []byte {
	t.Helper()
	for _, f := range testutil.Fixtures(t) {
		if f.Name == name {
			return f.Bytes(t)
		}
	}
	t.Fatalf("fixture %s missing", name)
	return nil
}

// waitConsole waits until the stand-in has shown a console line that
// satisfies cond (the engine writes the console asynchronously).
func waitConsole(t testing.TB, k *standin.Standin, what string, cond func(string) bool) string {
	t.Helper()
	var line string
	testutil.Eventually(t, testTimeout, "the console line of "+what, func() bool {
		i := slices.IndexFunc(k.ConsoleLines(), cond)
		if i >= 0 {
			line = k.ConsoleLines()[i]
		}
		return i >= 0
	})
	return line
}

func count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

// assertConsoleClean checks every line Klipper showed: prefixed, one line,
// and free of URLs, the printer token and the job's key material.
func assertConsoleClean(t *testing.T, k *standin.Standin, d *daemon, secrets []string) {
	t.Helper()
	tok, _ := d.client.Token()
	secrets = append(secrets, tok.Value)
	for _, l := range k.ConsoleLines() {
		if !strings.HasPrefix(l, "LMNT: ") || strings.ContainsAny(l, "\r\n") {
			t.Errorf("console line %q: want one line starting with \"LMNT: \"", l)
		}
		if strings.Contains(l, "://") {
			t.Errorf("console line with a URL: %q", l)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(l, s) {
				t.Errorf("console line contains a secret (%.8s…): %q", s, l)
			}
		}
	}
}

func TestBedClearAfterAPrintWaitsForLMNTReady(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(0)
	d := w.startDaemon(func(o *Options) { o.AutoStart = false })
	plain := fixtureGcode(t)

	// A fresh install has had no print of ours: the first job starts.
	first := w.createJob(plain)
	secrets := secretsOf(t, d, first)
	d.poll(t)
	if j := d.waitJob(t, first, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
		t.Fatalf("first job %+v", j)
	}

	// The print ended: the next job waits, and says so.
	second := w.createJob(plain)
	secrets = append(secrets, secretsOf(t, d, second)...)
	d.poll(t)
	j := d.waitJob(t, second, "the bed wait", func(j JobInfo) bool { return j.Message == BedWaitReason })
	if j.State != Accepted {
		t.Fatalf("second job %+v", j)
	}
	if s := d.eng.Snapshot(); s.BedClear || s.Active != nil || s.Waiting != BedWaitReason {
		t.Fatalf("snapshot %+v", s)
	}
	waitConsole(t, k, "the bed-clear question", func(l string) bool { return l == waitLine })
	w.waitHistory(second, "the wait reported", func(h []marketsim.StatusPost) bool {
		return len(h) > 0 && h[len(h)-1].Message == BedWaitReason
	})

	// It survives a restart of the daemon (and is said once per wait and
	// run, not at every status).
	d.stop()
	if data, err := os.ReadFile(filepath.Join(w.stateDir, "bed.json")); err != nil || !strings.Contains(string(data), `"clear":false`) {
		t.Fatalf("bed.json after the print: %q, %v", data, err)
	}
	d = w.startDaemon(func(o *Options) { o.AutoStart = false })
	d.poll(t)
	if !waitEngine(t, d.eng, func(Snapshot) bool { return d.eng.PrinterPort().Status().Connected }) {
		t.Fatal("Klipper did not reconnect")
	}
	if s := d.eng.Snapshot(); s.BedClear || s.Active != nil || len(s.Queue) != 1 {
		t.Fatalf("after the restart: %+v", s)
	}
	if n := len(k.Prints()); n != 1 {
		t.Fatalf("Klipper printed %d files before LMNT_READY, want 1", n)
	}

	// The owner runs LMNT_READY in Klipper. The harness does not forward
	// the command packet (the daemon does): the extra's ready_confirmed
	// status alone starts the job.
	if err := k.SendReady(nil); err != nil {
		t.Fatal(err)
	}
	if j := d.waitJob(t, second, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
		t.Fatalf("second job after LMNT_READY %+v", j)
	}
	// …and the bed is occupied again.
	if !waitEngine(t, d.eng, func(s Snapshot) bool { return !s.BedClear }) {
		t.Fatal("the bed still counts as clear after the second print")
	}
	// Console lines travel to Klipper on their own: the job can be terminal
	// before its last line has arrived.
	finished := "LMNT: finished " + DisplayName(&Record{ID: second}) + ": Print complete"
	waitConsole(t, k, "the finished line", func(l string) bool { return l == finished })
	lines := k.ConsoleLines()
	if n := count(lines, waitLine); n != 2 { // once in each run of the daemon
		t.Errorf("the wait was said %d times, want 2:\n%s", n, strings.Join(lines, "\n"))
	}
	for _, want := range []string{
		"LMNT: job received: " + DisplayName(&Record{ID: second}),
		"LMNT: started " + DisplayName(&Record{ID: second}),
		finished,
	} {
		if count(lines, want) != 1 {
			t.Errorf("console lacks %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	assertConsoleClean(t, k, d, secrets)
}

func TestAutoStartSkipsTheConfirmation(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(0)
	d := w.startDaemon(func(o *Options) { o.AutoStart = true })
	plain := fixtureGcode(t)
	for i := range 2 {
		id := w.createJob(plain)
		d.poll(t)
		if j := d.waitJob(t, id, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
			t.Fatalf("job %d: %+v", i, j)
		}
	}
	if n := len(k.Prints()); n != 2 {
		t.Fatalf("printed %d, want 2", n)
	}
	if count(k.ConsoleLines(), waitLine) != 0 {
		t.Error("auto_start asked for LMNT_READY")
	}
	if _, err := os.Stat(filepath.Join(w.stateDir, "bed.json")); !os.IsNotExist(err) {
		t.Errorf("auto_start wrote the bed state: %v", err)
	}
}

// TestOwnersPrintInKlipperOccupiesTheBed: a print lmntd did not start (here
// a file the owner started by name through the macro path) also ends with
// an occupied bed.
func TestOwnersPrintInKlipperOccupiesTheBed(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(0)
	d := w.startDaemon(func(o *Options) { o.AutoStart = false })
	if !waitEngine(t, d.eng, func(s Snapshot) bool { return d.eng.PrinterPort().Status().Connected && s.BedClear }) {
		t.Fatal("fresh install: bed not clear or Klipper not connected")
	}
	plain := fixtureGcode(t)
	f, err := memfd.Create("owner")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.Hold("virtual_owner.gcode", f, klipper.Metadata{}); err != nil {
		f.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := k.Fetch(ctx, "virtual_owner.gcode"); err != nil {
		t.Fatal(err)
	}
	w.waitKlipper("the owner's print to finish", func(st klipper.Status) bool {
		return st.PrintStats.Filename == "virtual_owner.gcode" && st.PrintStats.State == "complete"
	})
	if !waitEngine(t, d.eng, func(s Snapshot) bool { return !s.BedClear }) {
		t.Fatal("the owner's print ended but the bed still counts as clear")
	}
	id := w.createJob(plain)
	d.poll(t)
	d.waitJob(t, id, "the bed wait", func(j JobInfo) bool { return j.Message == BedWaitReason })
	if err := k.SendReady(nil); err != nil {
		t.Fatal(err)
	}
	if j := d.waitJob(t, id, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
		t.Fatalf("job %+v", j)
	}
}

func TestDisplayNameNeverLooksLikeAToken(t *testing.T) {
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{ID: "job-12-a1b2c3d4e5f6"}, "job-12-a1b2c3d4e5f6"},
		{Record{ID: "0e9e04df-153a-4202-b4a9-dd3e5c6b26d5"}, "0e9e04df…26d5"},
		{Record{ID: "Xy7aB9cD0eF1gH2iJ3kL"}, "Xy7aB9cD…J3kL"}, // a Firestore-style id
		{Record{ID: "local-0123456789abcdef", Name: "Benchy.gcode"}, "Benchy.gcode (local-01…cdef)"},
	} {
		if got := DisplayName(&tc.r); got != tc.want {
			t.Errorf("DisplayName(%q) = %q, want %q", tc.r.ID, got, tc.want)
		}
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// printerFrom reads a printer.cfg fixture of package compat.
func printerFrom(t *testing.T, tree string) func() klippercfg.Printer {
	t.Helper()
	r := klippercfg.Inspect(filepath.Join("..", "compat", "testdata", tree, "printer.cfg"), klippercfg.CheckOptions{})
	if len(r.Files) == 0 {
		t.Fatalf("printer.cfg of %s not read", tree)
	}
	return func() klippercfg.Printer { return r.Printer }
}

func TestCompatibilityCheckBeforeHandOff(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(0)
	prusaCube := fixtureNamed(t, "prusaslicer_cube20_pla_0.20mm") // 0.4 mm nozzle, PLA, 20 mm tall
	curaCube := fixtureGcode(t)                                   // states no nozzle and no filament

	for _, tc := range []struct {
		name, tree, filament string
		gcode                []byte
		reason               string // "" ⇒ prints
	}{
		{"0.4 job on a 0.6 printer", "voron_06", "", prusaCube,
			"Not compatible with this printer: sliced for a 0.4 mm nozzle, but the printer has a 0.6 mm nozzle (nozzle_diameter at printer.cfg:56); " +
				"if the nozzle was changed, update printer.cfg and restart Klipper"},
		{"20 mm job on 15 mm of Z", "mini_100", "", prusaCube,
			"Not compatible with this printer: the object is 20 mm tall, but Z travels only to 15 mm (stepper_z position_max at printer.cfg:16)"},
		{"PLA job, PETG loaded", "ender3_04", "PETG", prusaCube,
			"Not compatible with this printer: sliced for PLA, but the printer is set up for PETG (jobs.filament_type)"},
		{"no nozzle metadata", "voron_06", "PETG", curaCube, ""},
		{"matching job", "ender3_04", "pla", prusaCube, ""},
		{"no printer.cfg nozzle", "no_nozzle", "", prusaCube, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			d := w.startDaemon(func(o *Options) {
				o.Check = adapters.PrinterFit{Printer: printerFrom(t, tc.tree), FilamentType: func() string { return tc.filament },
					Logger: slogTo(logs)}.Check
			})
			defer d.stop()
			id := w.createJob(tc.gcode)
			secrets := secretsOf(t, d, id)
			before := len(k.Prints())
			d.poll(t)
			if tc.reason != "" {
				expectFailureAfter(t, w, d, id, tc.reason, before)
				if j := d.waitJob(t, id, "", func(JobInfo) bool { return true }); j.Message != tc.reason {
					t.Errorf("message %q, want exactly %q", j.Message, tc.reason)
				}
				waitConsole(t, k, "the failure", func(l string) bool {
					return strings.HasPrefix(l, "LMNT: failed "+DisplayName(&Record{ID: id})+": Not compatible with this printer: ")
				})
			} else if j := d.waitJob(t, id, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
				t.Fatalf("job %+v", j)
			}
			if tc.tree == "no_nozzle" && !strings.Contains(logs.String(), "nozzle_diameter is not set") {
				t.Errorf("the unchecked nozzle was not logged:\n%s", logs.String())
			}
			assertConsoleClean(t, k, d, secrets)
		})
	}
}

// gatedMarket holds a download at half its length until released, so the
// test can watch the progress reports while it runs. It gates the body
// through the marketplace adapter's Track hook, where the daemon counts it.
type gatedMarket struct {
	halfway chan struct{}
	release chan struct{}
}

func (g gatedMarket) track(_ string, body io.ReadCloser, size int64) io.ReadCloser {
	return &gatedBody{ReadCloser: body, at: size / 2, g: g}
}

type gatedBody struct {
	io.ReadCloser
	at, read int64
	g        gatedMarket
	once     sync.Once
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.read >= b.at {
		b.once.Do(func() { close(b.g.halfway); <-b.g.release })
	} else if rest := b.at - b.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	return n, err
}

var progressLine = regexp.MustCompile(`^LMNT: downloading (\S+): (\d+)%$`)

func TestDownloadProgressOnTheConsoleAndToTheMarketplace(t *testing.T) {
	w := newWorld(t)
	k := w.startKlipper(0)
	g := gatedMarket{halfway: make(chan struct{}), release: make(chan struct{})}
	d := w.startDaemon(func(o *Options) {
		m := o.Marketplace.(adapters.Marketplace)
		m.Track = g.track
		o.Marketplace = m
	})
	id := w.createJob(fixtureNamed(t, "prusaslicer_cube20_pla_0.20mm"))
	secrets := secretsOf(t, d, id)
	d.poll(t)

	<-g.halfway
	// Held at 50 %: the marketplace hears "Downloading: 40%" or so…
	h := w.waitHistory(id, "a download progress report", func(h []marketsim.StatusPost) bool {
		return len(h) > 0 && strings.HasPrefix(h[len(h)-1].Message, "Downloading: ") && h[len(h)-1].Message != "Downloading"
	})
	last := h[len(h)-1]
	if last.Status != jobstatus.Processing {
		t.Fatalf("progress report %+v", last)
	}
	if pct, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(last.Message, "Downloading: "), "%")); err != nil || pct < 10 || pct > 50 {
		t.Fatalf("progress report %q at half the download", last.Message)
	}
	// …and so does Klipper's console.
	waitConsole(t, k, "progress", func(l string) bool { return progressLine.MatchString(l) })
	if j := d.waitJob(t, id, "", func(JobInfo) bool { return true }); j.State != Downloading || !strings.HasPrefix(j.Message, "Downloading: ") {
		t.Errorf("job while downloading: %+v", j)
	}
	close(g.release)
	if j := d.waitJob(t, id, "success", func(j JobInfo) bool { return j.State.Terminal() }); j.State != Succeeded {
		t.Fatalf("job %+v", j)
	}

	// At most one line per tenth, in order, never 100 %.
	lastTenth := 0
	n := 0
	for _, l := range k.ConsoleLines() {
		m := progressLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n++
		pct, _ := strconv.Atoi(m[2])
		if m[1] != DisplayName(&Record{ID: id}) || pct/10 <= lastTenth || pct >= 100 {
			t.Errorf("progress line %q after tenth %d", l, lastTenth)
		}
		lastTenth = pct / 10
	}
	if n < 2 || n > 9 {
		t.Errorf("%d progress lines, want 2…9", n)
	}
	// The marketplace's progress reports also only grow.
	prev := -1
	for _, p := range w.sim.StatusHistory(id) {
		if s, ok := strings.CutPrefix(p.Message, "Downloading: "); ok {
			pct, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
			if err != nil || pct <= prev {
				t.Errorf("progress report %q after %d%%", p.Message, prev)
			}
			prev = pct
		}
	}
	assertConsoleClean(t, k, d, secrets)
}

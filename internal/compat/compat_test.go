package compat

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// printer reads a printer.cfg fixture tree the way the daemon does.
func printer(t *testing.T, tree string) klippercfg.Printer {
	t.Helper()
	r := klippercfg.Inspect(filepath.Join("testdata", tree, "printer.cfg"), klippercfg.CheckOptions{})
	if len(r.Files) == 0 {
		t.Fatalf("%s: printer.cfg not read: %v", tree, r.Findings)
	}
	return r.Printer
}

// sliced runs a real slicer fixture through the gate and returns what the
// compatibility check gets.
func sliced(t *testing.T, name string) *gcode.Metadata {
	t.Helper()
	for _, f := range testutil.Fixtures(t) {
		if f.Name == name {
			r := f.Open(t)
			defer r.Close()
			return inspect(t, r)
		}
	}
	t.Fatalf("no fixture %s", name)
	return nil
}

func inspect(t *testing.T, r io.Reader) *gcode.Metadata {
	t.Helper()
	in := gcode.NewInspector(gcode.Options{})
	if _, err := io.Copy(in, r); err != nil {
		t.Fatal(err)
	}
	m, err := in.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func items[T interface{ Mismatch | Unchecked | Note }](xs []T) []Item {
	var out []Item
	for _, x := range xs {
		switch v := any(x).(type) {
		case Mismatch:
			out = append(out, v.Item)
		case Unchecked:
			out = append(out, v.Item)
		case Note:
			out = append(out, v.Item)
		}
	}
	return out
}

func sameItems(got, want []Item) bool {
	return fmt.Sprint(got) == fmt.Sprint(want)
}

func TestPrusaCubeFitsEnder3(t *testing.T) {
	job := sliced(t, "prusaslicer_cube20_pla_0.20mm")
	res := Check(job, printer(t, "ender3_04"), Options{FilamentType: "pla"})
	if err := res.Err(); err != nil {
		t.Fatalf("a 0.4 mm PLA cube must pass on a 0.4 mm Ender 3 loaded with PLA: %v", err)
	}
	// PrusaSlicer states no extents: X and Y are honestly unchecked.
	if !sameItems(items(res.Unchecked), []Item{AxisX, AxisY}) {
		t.Errorf("unchecked = %v, want x and y", res.Unchecked)
	}
	for _, u := range res.Unchecked {
		if u.Reason != "the file does not state the print's extents" {
			t.Errorf("unchecked %s: reason %q", u.Item, u.Reason)
		}
	}
	if len(res.Notes) != 0 {
		t.Errorf("notes = %v: the cube's 25 mm lift fits 250 mm of Z", res.Notes)
	}
}

func TestNozzleMismatchNamesBothSizesAndTheLine(t *testing.T) {
	job := sliced(t, "prusaslicer_cube20_pla_0.20mm") // sliced for 0.4
	res := Check(job, printer(t, "voron_06"), Options{})
	err := res.Err()
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("err = %v, want ErrIncompatible", err)
	}
	var ie *IncompatibleError
	if !errors.As(err, &ie) || len(ie.Mismatches) != 1 || ie.Mismatches[0].Item != Nozzle {
		t.Fatalf("mismatches = %+v, want the nozzle only", res.Mismatches)
	}
	const want = "sliced for a 0.4 mm nozzle, but the printer has a 0.6 mm nozzle (nozzle_diameter at printer.cfg:56); " +
		"if the nozzle was changed, update printer.cfg and restart Klipper"
	if err.Error() != want {
		t.Errorf("message\n got %q\nwant %q", err.Error(), want)
	}
}

func TestNozzleTolerance(t *testing.T) {
	p := printer(t, "ender3_04") // 0.400
	for _, tc := range []struct {
		sliced float64
		ok     bool
	}{{0.4, true}, {0.41, true}, {0.38, true}, {0.45, false}, {0.35, false}, {0.6, false}, {0.25, false}} {
		res := Check(&gcode.Metadata{NozzleDiameter: tc.sliced}, p, Options{})
		if res.OK() != tc.ok {
			t.Errorf("sliced %.2f on 0.400: ok = %v, want %v (%v)", tc.sliced, res.OK(), tc.ok, res.Mismatches)
		}
	}
	// A looser tolerance is the owner's choice.
	if res := Check(&gcode.Metadata{NozzleDiameter: 0.45}, p, Options{NozzleTolerance: 0.06}); !res.OK() {
		t.Errorf("0.45 within a 0.06 mm tolerance: %v", res.Mismatches)
	}
}

func TestJobWithoutNozzleMetadataPasses(t *testing.T) {
	// CuraEngine's command line writes no nozzle size and no filament type.
	job := sliced(t, "cura_cube20_ender3_0.16mm")
	if job.NozzleDiameter != 0 {
		t.Fatalf("fixture changed: nozzle %v", job.NozzleDiameter)
	}
	for _, tree := range []string{"ender3_04", "voron_06"} {
		res := Check(job, printer(t, tree), Options{FilamentType: "PLA"})
		if err := res.Err(); err != nil {
			t.Errorf("%s: a job with no nozzle metadata must pass: %v", tree, err)
		}
		if !sameItems(items(res.Unchecked), []Item{Nozzle, AxisX, AxisY, Filament}) {
			t.Errorf("%s: unchecked = %v", tree, res.Unchecked)
		}
		if res.Unchecked[0].Reason != "the file does not state the nozzle it was sliced for" {
			t.Errorf("%s: nozzle reason %q", tree, res.Unchecked[0].Reason)
		}
	}
}

func TestPrinterWithoutNozzleDiameterPasses(t *testing.T) {
	job := sliced(t, "prusaslicer_cube20_pla_0.20mm")
	p := printer(t, "no_nozzle")
	res := Check(job, p, Options{})
	if err := res.Err(); err != nil {
		t.Fatalf("an unknown printer nozzle must not block: %v", err)
	}
	if res.Unchecked[0] != (Unchecked{Nozzle, "[extruder] nozzle_diameter is not set"}) {
		t.Errorf("unchecked[0] = %+v", res.Unchecked[0])
	}
	// The height is still checked against the 250 mm Z of the same tree.
	if res := Check(&gcode.Metadata{ObjectHeight: 251}, p, Options{}); res.OK() {
		t.Error("a 251 mm object passed on 250 mm of Z")
	}
}

func TestOversizeObjectHeight(t *testing.T) {
	// A real 20.04 mm Cura cube on a rig whose Z ends at 15 mm.
	job := sliced(t, "cura_cube20_ender3_0.16mm")
	res := Check(job, printer(t, "mini_100"), Options{})
	if !sameItems(items(res.Mismatches), []Item{AxisZ}) {
		t.Fatalf("mismatches = %v, want z", res.Mismatches)
	}
	const want = "the object is 20.04 mm tall, but Z travels only to 15 mm (stepper_z position_max at printer.cfg:16)"
	if got := res.Err().Error(); got != want {
		t.Errorf("message\n got %q\nwant %q", got, want)
	}
}

// curaFile is a minimal G-code file with the bounding-box header the Cura
// GUI writes (";MINX:" … ";MAXZ:").
func curaFile(minX, minY, maxX, maxY, maxZ float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, ";FLAVOR:Marlin\n;Generated with Cura_SteamEngine 5.6.0\n")
	fmt.Fprintf(&b, ";MINX:%.3f\n;MINY:%.3f\n;MINZ:0.2\n;MAXX:%.3f\n;MAXY:%.3f\n;MAXZ:%.3f\n", minX, minY, maxX, maxY, maxZ)
	b.WriteString("G28\nG1 Z0.2 F3000\nG1 X10 Y10\nG1 X20 Y10 E1\n")
	return b.String()
}

func TestOversizeExtentsFromTheFile(t *testing.T) {
	p := printer(t, "ender3_04") // X, Y 0..235
	for _, tc := range []struct {
		name      string
		file      string
		mismatch  []Item
		wantInMsg string
	}{
		{"fits", curaFile(100, 100, 135, 135, 20), nil, ""},
		{"on the edge", curaFile(0, 0, 235, 235.04, 20), nil, ""},
		{"too wide", curaFile(-10, 50, 250, 150, 20), []Item{AxisX},
			"the print is 260 mm wide in X, but the X axis travels only 235 mm (0 to 235, stepper_x position_max at printer.cfg:22)"},
		{"off the bed", curaFile(150, 150, 260, 200, 20), []Item{AxisX},
			"the print spans X 150 to 260 mm, outside the X axis's travel 0 to 235 mm (stepper_x position_max at printer.cfg:22); it was sliced for another bed"},
		{"both and tall", curaFile(0, -20, 236, 100, 300), []Item{AxisX, AxisY, AxisZ}, "the object is 300 mm tall"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := inspect(t, strings.NewReader(tc.file))
			if job.Extents == nil {
				t.Fatal("the gate read no extents")
			}
			res := Check(job, p, Options{})
			if !sameItems(items(res.Mismatches), tc.mismatch) {
				t.Fatalf("mismatches = %+v, want %v", res.Mismatches, tc.mismatch)
			}
			if tc.wantInMsg != "" && !strings.Contains(res.Err().Error(), tc.wantInMsg) {
				t.Errorf("message %q lacks %q", res.Err(), tc.wantInMsg)
			}
		})
	}
}

func TestDeltaAxesAreUncheckedNotGuessed(t *testing.T) {
	p := printer(t, "delta")
	job := &gcode.Metadata{NozzleDiameter: 0.4, ObjectHeight: 400, FilamentType: "PLA",
		Extents: &gcode.Extents{MinX: -200, MaxX: 200, MinY: -200, MaxY: 200, MaxZ: 400}}
	res := Check(job, p, Options{FilamentType: "PLA"})
	if err := res.Err(); err != nil {
		t.Fatalf("unknown axes must not block: %v", err)
	}
	if !sameItems(items(res.Unchecked), []Item{AxisX, AxisY, AxisZ}) {
		t.Fatalf("unchecked = %v", res.Unchecked)
	}
	for _, u := range res.Unchecked {
		if !strings.Contains(u.Reason, `kinematics "delta"`) {
			t.Errorf("%s: reason %q does not name the kinematics", u.Item, u.Reason)
		}
	}
	// The nozzle is still compared on a delta.
	if res := Check(&gcode.Metadata{NozzleDiameter: 0.8}, p, Options{}); !sameItems(items(res.Mismatches), []Item{Nozzle}) {
		t.Errorf("0.8 on a 0.4 delta: mismatches = %v", res.Mismatches)
	}
}

func TestFilament(t *testing.T) {
	p := printer(t, "ender3_04")
	petg := sliced(t, "prusaslicer_vase_spiral_petg_0.15mm")

	res := Check(petg, p, Options{FilamentType: "PLA"})
	const want = "sliced for PETG, but the printer is set up for PLA (jobs.filament_type)"
	if !sameItems(items(res.Mismatches), []Item{Filament}) || res.Err().Error() != want {
		t.Fatalf("PETG job, PLA loaded: %v", res.Err())
	}
	if res := Check(petg, p, Options{FilamentType: " petg "}); !res.OK() {
		t.Errorf("case and spaces must not matter: %v", res.Mismatches)
	}
	res = Check(petg, p, Options{})
	if !res.OK() || res.Unchecked[len(res.Unchecked)-1] != (Unchecked{Filament, filamentNotConfigured}) {
		t.Errorf("no filament configured: ok=%v unchecked=%v", res.OK(), res.Unchecked)
	}
	// The file's text is untrusted: it cannot inject lines into the message.
	res = Check(&gcode.Metadata{FilamentType: "ABS\nLMNT: ok"}, p, Options{FilamentType: "PLA"})
	if msg := res.Err().Error(); strings.ContainsAny(msg, "\r\n") {
		t.Errorf("control characters reached the message: %q", msg)
	}
}

func TestEndOfPrintLiftIsANoteOnly(t *testing.T) {
	p := printer(t, "mini_100") // Z to 15
	res := Check(&gcode.Metadata{ObjectHeight: 14, MaxZ: 24}, p, Options{})
	if !res.OK() {
		t.Fatalf("a 14 mm object fits 15 mm of Z: %v", res.Mismatches)
	}
	if !sameItems(items(res.Notes), []Item{AxisZ}) || !strings.Contains(res.Notes[0].Message, "Move out of range") {
		t.Errorf("notes = %v", res.Notes)
	}
}

func TestUnreadPrinterBlocksNothing(t *testing.T) {
	job := sliced(t, "prusaslicer_cube20_pla_0.20mm")
	res := Check(job, klippercfg.Printer{}, Options{})
	if !res.OK() {
		t.Fatalf("zero printer: %v", res.Mismatches)
	}
	for _, u := range res.Unchecked {
		if u.Reason == "" {
			t.Errorf("%s: no reason", u.Item)
		}
	}
	// A printer.cfg that cannot be read says so.
	r := klippercfg.Inspect(filepath.Join(t.TempDir(), "printer.cfg"), klippercfg.CheckOptions{})
	res = Check(job, r.Printer, Options{})
	if !res.OK() || res.Unchecked[0] != (Unchecked{Nozzle, "printer.cfg could not be read"}) {
		t.Errorf("unreadable printer.cfg: ok=%v unchecked=%v", res.OK(), res.Unchecked)
	}
}

func TestHostileNumbersNeverBlock(t *testing.T) {
	p := printer(t, "ender3_04")
	nan, inf := math.NaN(), math.Inf(1)
	job := &gcode.Metadata{NozzleDiameter: nan, ObjectHeight: inf, MaxZ: inf,
		Extents: &gcode.Extents{MinX: nan, MaxX: inf, MinY: nan, MaxY: nan}}
	res := Check(job, p, Options{})
	if !res.OK() {
		t.Fatalf("NaN/Inf must be unknown, not a mismatch: %v", res.Mismatches)
	}
	if !sameItems(items(res.Unchecked), []Item{Nozzle, AxisX, AxisY, AxisZ, Filament}) {
		t.Errorf("unchecked = %v", res.Unchecked)
	}
}

func TestCoverage(t *testing.T) {
	for _, tc := range []struct {
		tree     string
		filament string
		want     []Item
	}{
		{"ender3_04", "PLA", nil},
		{"ender3_04", "", []Item{Filament}},
		{"delta", "PLA", []Item{AxisX, AxisY, AxisZ}},
		{"no_nozzle", "PLA", []Item{Nozzle}},
	} {
		got := Coverage(printer(t, tc.tree), Options{FilamentType: tc.filament})
		if !sameItems(items(got), tc.want) {
			t.Errorf("%s/%q: coverage gaps = %v, want %v", tc.tree, tc.filament, got, tc.want)
		}
		for _, u := range got {
			if u.Reason == "" || !strings.HasPrefix(u.String(), string(u.Item)+": ") {
				t.Errorf("%s: %q", tc.tree, u.String())
			}
		}
	}
}

package klippercfg

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

const python = "/usr/bin/python3"

func testdata(t *testing.T, tree string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", tree, "printer.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// asMap renders a parsed tree like the Python reference does.
func asMap(c *Config) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range c.Sections() {
		m := map[string]string{}
		for _, o := range s.Options() {
			m[o.Name] = o.Value
		}
		out[s.Name] = m
	}
	return out
}

// TestParseMatchesPythonConfigparser reads each tree with Python's own
// configparser driven the way Klipper drives it, and requires the same
// sections, options and values.
func TestParseMatchesPythonConfigparser(t *testing.T) {
	edge := t.TempDir()
	testutil.WriteFile(t, edge, "printer.cfg", "[include sub/*.cfg]\n[s]\n"+
		"a: one ; semicolon comment\n"+
		"b = x;y#z\n"+
		"c:\n  line1\n\n  line2   # comment\n  # full comment inside\n  line3\n"+
		"\tTabbed: v\n"+
		"URL: http://h:1/p=q\n"+
		"[s]\n"+
		"a: overridden\n"+
		"[gcode_macro T]\ngcode:\n  {% if x %}\n    M117 a; b\n  {% endif %}\n"+
		"[include sub/last.cfg]\n[after_include]\nk: v\n")
	testutil.WriteFile(t, edge, "sub/a.cfg", "[s]\nfrom_a: 1\n")
	testutil.WriteFile(t, edge, "sub/b.cfg", "[t]\nv: 2\n  continued\n")
	testutil.WriteFile(t, edge, "sub/last.cfg", "[s]\nb: last\n")
	trees := map[string]string{
		"mainsailos": testdata(t, "mainsailos"),
		"kiauh":      testdata(t, "kiauh"),
		"saveconfig": testdata(t, "saveconfig"),
		"delta":      testdata(t, "delta"),
		"edge cases": filepath.Join(edge, "printer.cfg"),
	}
	for name, path := range trees {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(python, "testdata/klipper_reference.py", path).Output()
			if err != nil {
				t.Fatalf("reference reader: %v", err)
			}
			var want map[string]map[string]string
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatal(err)
			}
			c := Parse(path)
			if len(c.Problems) > 0 && name != "saveconfig" {
				t.Errorf("problems: %v", c.Problems)
			}
			if got := asMap(c); !reflect.DeepEqual(got, want) {
				for s := range want {
					if !reflect.DeepEqual(got[s], want[s]) {
						t.Errorf("[%s]\n got %q\nwant %q", s, got[s], want[s])
					}
				}
				for s := range got {
					if _, ok := want[s]; !ok {
						t.Errorf("extra section [%s]", s)
					}
				}
			}
		})
	}
}

func TestMainsailOSTree(t *testing.T) {
	path := testdata(t, "mainsailos")
	dir := filepath.Dir(path)
	r := Inspect(path, CheckOptions{BridgeSocket: DefaultBridgeSocket})
	if !r.OK() || r.Count(SeverityWarning) != 0 {
		t.Errorf("findings on a correct tree: %v", r.Findings)
	}
	if got := r.StatusLine(); got != "printer.cfg OK" {
		t.Errorf("StatusLine = %q", got)
	}
	wantFiles := []string{path, filepath.Join(dir, "mainsail.cfg"), filepath.Join(dir, "lmnt.cfg")}
	if !reflect.DeepEqual(r.Files, wantFiles) {
		t.Errorf("Files = %v", r.Files)
	}
	p := r.Printer
	if p.Kinematics != "cartesian" || p.X.Max.Value != 235 || p.Y.Max.Value != 235 || p.Z.Max.Value != 250 ||
		p.X.Min.Value != 0 || !p.X.Min.Known || p.Z.Min.Value != -2 {
		t.Errorf("axes: %+v", p)
	}
	nd := p.NozzleDiameter()
	if !nd.Known || nd.Value != 0.4 || nd.From.String() != path+":55" {
		t.Errorf("nozzle = %+v from %v", nd, nd.From)
	}
	if !p.HeatedBed || p.BedMaxTemp.Value != 130 || p.Extruders[0].MaxTemp.Value != 250 {
		t.Errorf("heaters: %+v", p)
	}
	if u := p.Unknowns(); len(u) != 0 {
		t.Errorf("Unknowns = %v", u)
	}
	if r.BridgeSocket != DefaultBridgeSocket {
		t.Errorf("BridgeSocket = %q", r.BridgeSocket)
	}

	c := Parse(path)
	bl, _ := c.Section("bltouch")
	z, ok := bl.Option("z_offset")
	if !ok || z.Value != "2.345" || !z.SaveConfig || z.Loc.Line != 90 {
		t.Errorf("SAVE_CONFIG z_offset = %+v", z)
	}
	mesh, _ := c.Section("bed_mesh default")
	pts, _ := mesh.Option("points")
	if strings.Count(pts.Value, "\n") != 3 {
		t.Errorf("multi-line SAVE_CONFIG value: %q", pts.Value)
	}
	vsd, _ := c.Section("virtual_sdcard")
	if vsd.Loc.File != filepath.Join(dir, "mainsail.cfg") {
		t.Errorf("[virtual_sdcard] located at %v", vsd.Loc)
	}
}

func TestKIAUHTreeWithGlobs(t *testing.T) {
	path := testdata(t, "kiauh")
	dir := filepath.Dir(path)
	c := Parse(path)
	wantFiles := []string{
		path,
		filepath.Join(dir, "mainsail.cfg"),
		filepath.Join(dir, "hardware", "fans.cfg"),
		filepath.Join(dir, "hardware", "mcu.cfg"),
		filepath.Join(dir, "macros", "00-print.cfg"),
		filepath.Join(dir, "macros", "lmnt.cfg"),
	}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Errorf("Files (sorted glob order, no dot-files):\n got %v\nwant %v", c.Files, wantFiles)
	}
	if len(c.Includes) != 3 || c.Includes[2].Spec != "macros/*.cfg" || c.Includes[2].Loc.Line != 4 {
		t.Errorf("Includes = %+v", c.Includes)
	}
	r := Check(c, CheckOptions{BridgeSocket: "/run/lmntd/klipper.sock"})
	if !r.OK() || r.Count(SeverityWarning) != 0 {
		t.Errorf("findings: %v", r.Findings)
	}
	p := r.Printer
	if p.Kinematics != "corexy" || p.X.Max.Value != 350 || p.Y.Max.Value != 350 || p.Z.Max.Value != 330 || p.Z.Min.Value != -5 {
		t.Errorf("axes: %+v", p)
	}
	if nd := p.NozzleDiameter(); nd.Value != 0.6 {
		t.Errorf("nozzle = %+v", nd)
	}
}

func TestSaveConfigBlock(t *testing.T) {
	path := testdata(t, "saveconfig")
	c := Parse(path)
	probe, _ := c.Section("probe")
	if z, _ := probe.Option("z_offset"); z.Value != "1.000" || z.SaveConfig {
		t.Errorf("Klipper keeps the regular z_offset over SAVE_CONFIG's: %+v", z)
	}
	sz, _ := c.Section("stepper_z")
	if pe, ok := sz.Option("position_endstop"); !ok || pe.Value != "0.495" || !pe.SaveConfig {
		t.Errorf("stepper_z position_endstop from SAVE_CONFIG: %+v", pe)
	}
	if _, ok := c.Section("input_shaper"); !ok {
		t.Error("[input_shaper] from SAVE_CONFIG missing")
	}
	ex, _ := c.Section("extruder")
	if kp, _ := ex.Option("pid_kp"); kp.Value != "26.213" {
		t.Errorf("pid_kp = %+v", kp)
	}
	r := Check(c, CheckOptions{})
	var dup []Finding
	for _, f := range r.Findings {
		if f.Code == CodeSaveConfigDuplicate {
			dup = append(dup, f)
		}
	}
	if len(dup) != 1 || dup[0].Section != "probe" || dup[0].Line != 31 || dup[0].Severity != SeverityWarning ||
		!strings.Contains(dup[0].Message, path+":25") {
		t.Errorf("duplicate finding: %+v", dup)
	}
	if !r.OK() || !strings.HasPrefix(r.StatusLine(), "printer.cfg: 1 warning; [probe] z_offset is set both at") {
		t.Errorf("StatusLine = %q", r.StatusLine())
	}
}

func TestDeltaPrinterIsUnknownNotGuessed(t *testing.T) {
	r := Inspect(testdata(t, "delta"), CheckOptions{BridgeSocket: DefaultBridgeSocket})
	p := r.Printer
	for _, m := range []Measure{p.X.Min, p.X.Max, p.Y.Max, p.Z.Max} {
		if m.Known || !strings.Contains(m.Unknown, `kinematics "delta"`) {
			t.Errorf("delta axis = %+v", m)
		}
	}
	if nd := p.NozzleDiameter(); !nd.Known || nd.Value != 0.4 {
		t.Errorf("nozzle = %+v", nd)
	}
	codes := map[string]Finding{}
	for _, f := range r.Findings {
		codes[f.Code] = f
	}
	sock := codes[CodeBridgeSocket]
	if sock.Severity != SeverityError || sock.Line != 25 ||
		sock.Message != "the extra connects to /run/lmnt/bridge.sock but lmntd listens on /run/lmntd/klipper.sock" {
		t.Errorf("socket finding: %+v", sock)
	}
	if codes[CodeMacroMissing].Severity != SeverityWarning || !strings.Contains(codes[CodeMacroMissing].Fix, MacroSnippet) {
		t.Errorf("macro finding: %+v", codes[CodeMacroMissing])
	}
	if f, ok := codes[CodeCompatUnknown]; !ok || f.Severity != SeverityInfo {
		t.Errorf("compat-unknown finding: %+v", f)
	}
	if got := len(p.Unknowns()); got != 6 {
		t.Errorf("Unknowns = %v", p.Unknowns())
	}
}

// A complete, correct tree the finding tests break one piece of.
const goodLmnt = "[encrypted_file_bridge]\n[secure_print]\n" + MacroSnippet + "\n"
const goodPrinter = "[virtual_sdcard]\npath: ~/printer_data/gcodes\n[printer]\nkinematics: cartesian\n" +
	"[stepper_x]\nposition_max: 200\n[stepper_y]\nposition_max: 200\n[stepper_z]\nposition_max: 180\n" +
	"[extruder]\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n"

func TestFindings(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // printer.cfg and friends
		code    string
		sev     Severity
		section string
		file    string
		line    int
		message string // substring
	}{
		{"missing include", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "[include missing.cfg]\n"},
			CodeIncludeMissing, SeverityError, "", "printer.cfg", 24, "missing.cfg does not exist; Klipper will not start"},
		{"recursive include", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "[include a.cfg]\n", "a.cfg": "[include b/c.cfg]\n", "b/c.cfg": "[include ../a.cfg]\n"},
			CodeIncludeRecursive, SeverityError, "", "b/c.cfg", 1, "includes "},
		{"include a directory", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "[include sub]\n", "sub/x.cfg": "[x]\n"},
			CodeIncludeUnreadable, SeverityError, "", "printer.cfg", 24, "is a directory"},
		{"option after include without section", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "[include a.cfg]\nmax_velocity: 300\n", "a.cfg": "[a]\n"},
			CodeSyntax, SeverityError, "", "printer.cfg", 25, `option "max_velocity: 300" outside any [section]`},
		{"not an option line", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "[fan]\npin PA8\n"},
			CodeSyntax, SeverityError, "", "printer.cfg", 25, `"pin PA8" is not an option line`},
		{"bridge missing", map[string]string{"printer.cfg": goodPrinter + "[secure_print]\n" + MacroSnippet + "\n"},
			CodeBridgeMissing, SeverityError, "encrypted_file_bridge", "printer.cfg", 0, "section missing: Klipper cannot receive lmntd's jobs"},
		{"bridge in wrong case", map[string]string{"printer.cfg": goodPrinter + "[Encrypted_File_Bridge]\n[secure_print]\n" + MacroSnippet + "\n"},
			CodeBridgeMissing, SeverityError, "encrypted_file_bridge", "printer.cfg", 0, "(found [Encrypted_File_Bridge] at "},
		{"secure_print missing", map[string]string{"printer.cfg": goodPrinter + "[encrypted_file_bridge]\n" + MacroSnippet + "\n"},
			CodeSecurePrintMissing, SeverityError, "secure_print", "printer.cfg", 0, "section missing"},
		{"virtual_sdcard missing", map[string]string{"printer.cfg": strings.Replace(goodPrinter, "[virtual_sdcard]\npath: ~/printer_data/gcodes\n", "", 1) + goodLmnt},
			CodeVirtualSDCard, SeverityError, "virtual_sdcard", "printer.cfg", 0, "Klipper cannot print files at all"},
		{"virtual_sdcard without path", map[string]string{"printer.cfg": strings.Replace(goodPrinter, "path: ~/printer_data/gcodes\n", "on_error_gcode: CANCEL_PRINT\n", 1) + goodLmnt},
			CodeVirtualSDCardPath, SeverityError, "virtual_sdcard", "printer.cfg", 1, "path is not set"},
		{"macro without rename_existing", map[string]string{"printer.cfg": goodPrinter + "[encrypted_file_bridge]\n[secure_print]\n" + strings.Replace(MacroSnippet, "rename_existing: BASE_SDCARD_PRINT_FILE\n", "", 1) + "\n"},
			CodeMacroBroken, SeverityError, "gcode_macro SDCARD_PRINT_FILE", "printer.cfg", 16, "rename_existing is not set"},
		{"macro without SET_GCODE_FD", map[string]string{"printer.cfg": goodPrinter + "[encrypted_file_bridge]\n[secure_print]\n[gcode_macro SDCARD_PRINT_FILE]\nrename_existing: BASE_SDCARD_PRINT_FILE\ngcode:\n  BASE_SDCARD_PRINT_FILE {rawparams}\n"},
			CodeMacroBroken, SeverityError, "gcode_macro SDCARD_PRINT_FILE", "printer.cfg", 18, "does not hand virtual_ files to SET_GCODE_FD"},
		{"macro without base call", map[string]string{"printer.cfg": goodPrinter + "[encrypted_file_bridge]\n[secure_print]\n[gcode_macro SDCARD_PRINT_FILE]\nrename_existing: SDCARD_PRINT_FILE_ORIG\ngcode:\n  {% if params.FILENAME.startswith('virtual_') %}\n    SET_GCODE_FD FILENAME=\"{params.FILENAME}\"\n  {% endif %}\n"},
			CodeMacroNoBase, SeverityWarning, "gcode_macro SDCARD_PRINT_FILE", "printer.cfg", 18, "never calls SDCARD_PRINT_FILE_ORIG"},
		{"edited SAVE_CONFIG block", map[string]string{"printer.cfg": goodPrinter + goodLmnt + "\n" + strings.Join(autosaveHeader, "\n") + "\n#*# [probe]\nz_offset = 1.2\n"},
			CodeSaveConfigCorrupt, SeverityWarning, "", "printer.cfg", 29, "Klipper ignores the whole block"},
		{"stray SAVE_CONFIG line above the header", map[string]string{"printer.cfg": goodPrinter + "#*# [probe]\n" + goodLmnt},
			CodeSaveConfigCorrupt, SeverityWarning, "", "printer.cfg", 14, "above the SAVE_CONFIG block"},
		{"printer.cfg missing", map[string]string{"other.cfg": ""},
			CodeConfigUnreadable, SeverityError, "", "printer.cfg", 0, "no such file or directory"},
		{"nozzle not a number", map[string]string{"printer.cfg": strings.Replace(goodPrinter, "nozzle_diameter: 0.4", "nozzle_diameter: 0,4", 1) + goodLmnt},
			CodeCompatUnknown, SeverityInfo, "", "printer.cfg", 0, `nozzle_diameter: [extruder] nozzle_diameter "0,4" at `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				testutil.WriteFile(t, dir, name, content)
			}
			r := Inspect(filepath.Join(dir, "printer.cfg"), CheckOptions{BridgeSocket: DefaultBridgeSocket})
			var got []Finding
			for _, f := range r.Findings {
				if f.Code == tc.code {
					got = append(got, f)
				}
			}
			if len(got) != 1 {
				t.Fatalf("want one %s finding, got %d; all findings:\n%v", tc.code, len(got), r.Findings)
			}
			f := got[0]
			if f.Severity != tc.sev || f.Section != tc.section || f.File != filepath.Join(dir, tc.file) || f.Line != tc.line ||
				!strings.Contains(f.Message, tc.message) || (tc.sev > SeverityInfo && f.Fix == "") {
				t.Errorf("finding:\n got %+v\nwant %v %s [%s] %s:%d %q", f, tc.sev, tc.code, tc.section, tc.file, tc.line, tc.message)
			}
			// Only the broken piece is reported (compat info aside).
			for _, other := range r.Findings {
				if other.Code != tc.code && other.Severity > SeverityInfo && tc.code != CodeConfigUnreadable {
					t.Errorf("unexpected extra finding: %v", other)
				}
			}
			if tc.code == CodeConfigUnreadable {
				for _, u := range r.Printer.Unknowns() {
					if !strings.HasSuffix(u, ": printer.cfg could not be read") {
						t.Errorf("unknown without a reason: %q", u)
					}
				}
			}
			if tc.sev == SeverityError && r.OK() {
				t.Error("OK() with an error finding")
			}
		})
	}
}

func TestEmptyGlobIsFine(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "printer.cfg", goodPrinter+goodLmnt+"[include macros/*.cfg]\n")
	r := Inspect(filepath.Join(dir, "printer.cfg"), CheckOptions{})
	if len(r.Findings) != 0 {
		t.Errorf("findings: %v", r.Findings)
	}
}

func TestStatusLineAndJSON(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "printer.cfg", goodPrinter+"[secure_print]\n")
	r := Inspect(filepath.Join(dir, "printer.cfg"), CheckOptions{})
	want := "printer.cfg: 1 error, 1 warning; [encrypted_file_bridge] section missing: Klipper cannot receive lmntd's jobs"
	if got := r.StatusLine(); got != want {
		t.Errorf("StatusLine:\n got %q\nwant %q", got, want)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Findings, r.Findings) || !strings.Contains(string(b), `"severity":"error"`) {
		t.Errorf("JSON round trip: %s", b)
	}
}

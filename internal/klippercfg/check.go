package klippercfg

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Severity ranks a finding.
type Severity int

// Severities, mildest first.
const (
	SeverityInfo Severity = iota
	SeverityWarning
	SeverityError
)

func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "info"
	case SeverityWarning:
		return "warning"
	case SeverityError:
		return "error"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// MarshalText renders the severity as "info", "warning" or "error".
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "info":
		*s = SeverityInfo
	case "warning":
		*s = SeverityWarning
	case "error":
		*s = SeverityError
	default:
		return fmt.Errorf("unknown severity %q", b)
	}
	return nil
}

// Finding codes: stable identifiers for tools and tests.
const (
	CodeConfigUnreadable    = "config-unreadable"
	CodeIncludeMissing      = "include-missing"
	CodeIncludeRecursive    = "include-recursive"
	CodeIncludeUnreadable   = "include-unreadable"
	CodeIncludeBad          = "include-bad"
	CodeSyntax              = "syntax"
	CodeSaveConfigCorrupt   = "save-config-corrupt"
	CodeSaveConfigDuplicate = "save-config-duplicate"
	CodeBridgeMissing       = "bridge-missing"
	CodeBridgeSocket        = "bridge-socket-mismatch"
	CodeSecurePrintMissing  = "secure-print-missing"
	CodeVirtualSDCard       = "virtual-sdcard-missing"
	CodeVirtualSDCardPath   = "virtual-sdcard-path-missing"
	CodeMacroMissing        = "macro-missing"
	CodeMacroBroken         = "macro-broken"
	CodeMacroNoBase         = "macro-no-base-call"
	CodeCompatUnknown       = "compat-unknown"
)

// Finding is one problem (or, at SeverityInfo, one thing lmntd could not
// determine) in Klipper's config.
type Finding struct {
	Severity Severity `json:"severity"`
	Code     string   `json:"code"`
	Section  string   `json:"section,omitempty"`
	File     string   `json:"file,omitempty"`
	Line     int      `json:"line,omitempty"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix,omitempty"`
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	if f.File != "" {
		b.WriteString(" ")
		b.WriteString(Location{File: f.File, Line: f.Line}.String())
	}
	if f.Section != "" {
		fmt.Fprintf(&b, " [%s]", f.Section)
	}
	b.WriteString(": ")
	b.WriteString(f.Message)
	if f.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(f.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Section names and the macro of the original plugin's README.
const (
	SectionBridge        = "encrypted_file_bridge"
	SectionSecurePrint   = "secure_print"
	SectionVirtualSDCard = "virtual_sdcard"
	MacroName            = "SDCARD_PRINT_FILE"
	// BridgeSocketOption is the [encrypted_file_bridge] option naming the
	// daemon's socket; DefaultBridgeSocket is the extra's default.
	BridgeSocketOption  = "socket_path"
	DefaultBridgeSocket = "/run/lmntd/klipper.sock"
)

// MacroSnippet is the SDCARD_PRINT_FILE macro to add, from the original
// plugin's README.
const MacroSnippet = `[gcode_macro SDCARD_PRINT_FILE]
rename_existing: BASE_SDCARD_PRINT_FILE
gcode:
    {% if params.FILENAME is defined and params.FILENAME.startswith('virtual_') %}
        SET_GCODE_FD FILENAME="{params.FILENAME}"
    {% else %}
        BASE_SDCARD_PRINT_FILE {rawparams}
    {% endif %}`

// CheckOptions are what lmntd itself is configured with.
type CheckOptions struct {
	// BridgeSocket is the socket lmntd listens on (config klipper.bridge_socket);
	// empty skips the comparison.
	BridgeSocket string
}

// Measure is one number read from printer.cfg, or why it is unknown.
type Measure struct {
	Value float64   `json:"value,omitempty"`
	Known bool      `json:"known"`
	From  *Location `json:"from,omitempty"`
	// Unknown says why the value is not known (when !Known).
	Unknown string `json:"unknown,omitempty"`
}

// Axis is the travel range of one axis.
type Axis struct {
	Min Measure `json:"min"`
	Max Measure `json:"max"`
}

// Extruder is one [extruder] / [extruderN] section.
type Extruder struct {
	Name             string  `json:"name"`
	NozzleDiameter   Measure `json:"nozzle_diameter"`
	FilamentDiameter Measure `json:"filament_diameter"`
	MaxTemp          Measure `json:"max_temp"`
}

// Printer is what the compatibility check needs to know about the machine.
type Printer struct {
	Kinematics string     `json:"kinematics,omitempty"`
	X          Axis       `json:"x"`
	Y          Axis       `json:"y"`
	Z          Axis       `json:"z"`
	Extruders  []Extruder `json:"extruders"`
	HeatedBed  bool       `json:"heated_bed"`
	BedMaxTemp Measure    `json:"bed_max_temp"`

	// unreadable is set when printer.cfg could not be read at all.
	unreadable string
}

// NozzleDiameter is the first extruder's nozzle diameter (unknown if none).
func (p Printer) NozzleDiameter() Measure {
	if p.unreadable != "" {
		return Measure{Unknown: p.unreadable}
	}
	if len(p.Extruders) == 0 {
		return Measure{Unknown: "printer.cfg has no [extruder] section"}
	}
	return p.Extruders[0].NozzleDiameter
}

// Unknowns lists what could not be determined, for lmnt doctor
// ("not checked: ...").
func (p Printer) Unknowns() []string {
	var out []string
	add := func(name string, m Measure) {
		if !m.Known {
			out = append(out, name+": "+m.Unknown)
		}
	}
	add("nozzle_diameter", p.NozzleDiameter())
	for _, a := range []struct {
		n string
		a Axis
	}{{"x", p.X}, {"y", p.Y}, {"z", p.Z}} {
		add(a.n+" position_min", a.a.Min)
		add(a.n+" position_max", a.a.Max)
	}
	return out
}

// Report is the result of checking one printer.cfg tree.
type Report struct {
	ConfigFile string    `json:"config_file"`
	Files      []string  `json:"files"`
	Findings   []Finding `json:"findings"`
	Printer    Printer   `json:"printer"`
	// BridgeSocket is the socket the extra will connect to.
	BridgeSocket string `json:"bridge_socket,omitempty"`
}

// Count returns how many findings have severity sev.
func (r *Report) Count(sev Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == sev {
			n++
		}
	}
	return n
}

// OK reports whether nothing would keep lmntd's jobs from printing.
func (r *Report) OK() bool { return r.Count(SeverityError) == 0 }

// StatusLine is a one-line summary for sd_notify STATUS= and the console.
func (r *Report) StatusLine() string {
	var worst *Finding
	for i := range r.Findings {
		f := &r.Findings[i]
		if f.Severity > SeverityInfo && (worst == nil || f.Severity > worst.Severity) {
			worst = f
		}
	}
	if worst == nil {
		return "printer.cfg OK"
	}
	errs, warns := r.Count(SeverityError), r.Count(SeverityWarning)
	var counts []string
	if errs > 0 {
		counts = append(counts, plural(errs, "error"))
	}
	if warns > 0 {
		counts = append(counts, plural(warns, "warning"))
	}
	where := ""
	if worst.Section != "" {
		where = "[" + worst.Section + "] "
	}
	return fmt.Sprintf("printer.cfg: %s; %s%s", strings.Join(counts, ", "), where, worst.Message)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// Inspect parses path and checks it.
func Inspect(path string, opts CheckOptions) *Report { return Check(Parse(path), opts) }

// Check inspects a parsed tree for what lmntd needs.
func Check(c *Config, opts CheckOptions) *Report {
	r := &Report{ConfigFile: c.Path, Files: append([]string(nil), c.Files...)}
	r.Findings = append(r.Findings, c.Problems...)
	if len(c.Files) == 0 { // printer.cfg itself could not be read
		unknown := Measure{Unknown: "printer.cfg could not be read"}
		axis := Axis{Min: unknown, Max: unknown}
		r.Printer = Printer{X: axis, Y: axis, Z: axis, BedMaxTemp: unknown, unreadable: unknown.Unknown}
		return r
	}
	add := func(f Finding) { r.Findings = append(r.Findings, f) }
	mainLoc := Location{File: c.Path}

	missing := func(name, code, msg, fix string) {
		if alt := caseVariant(c, name); alt != nil {
			msg += fmt.Sprintf(" (found [%s] at %s, but section names are case-sensitive)", alt.Name, alt.Loc)
		}
		add(Finding{Severity: SeverityError, Code: code, Section: name, File: mainLoc.File, Message: msg, Fix: fix})
	}

	// [encrypted_file_bridge] and its socket.
	if s, ok := c.Section(SectionBridge); !ok {
		missing(SectionBridge, CodeBridgeMissing, "section missing: Klipper cannot receive lmntd's jobs",
			"add a line \"["+SectionBridge+"]\" to printer.cfg and restart Klipper")
	} else {
		r.BridgeSocket = DefaultBridgeSocket
		if o, ok := s.Option(BridgeSocketOption); ok && o.Value != "" {
			r.BridgeSocket = o.Value
		}
		if opts.BridgeSocket != "" && r.BridgeSocket != opts.BridgeSocket {
			f := Finding{Severity: SeverityError, Code: CodeBridgeSocket, Section: SectionBridge, File: s.Loc.File, Line: s.Loc.Line,
				Message: fmt.Sprintf("the extra connects to %s but lmntd listens on %s", r.BridgeSocket, opts.BridgeSocket),
				Fix:     fmt.Sprintf("set \"%s: %s\" in [%s] (or klipper.bridge_socket in lmntd.toml) and restart Klipper", BridgeSocketOption, opts.BridgeSocket, SectionBridge)}
			if o, ok := s.Option(BridgeSocketOption); ok {
				f.File, f.Line = o.Loc.File, o.Loc.Line
			}
			add(f)
		}
	}

	if _, ok := c.Section(SectionSecurePrint); !ok {
		missing(SectionSecurePrint, CodeSecurePrintMissing, "section missing: Klipper cannot load lmntd's jobs, and SET_GCODE_FD and LMNT_READY do not exist",
			"add a line \"["+SectionSecurePrint+"]\" to printer.cfg and restart Klipper")
	}

	if s, ok := c.Section(SectionVirtualSDCard); !ok {
		missing(SectionVirtualSDCard, CodeVirtualSDCard, "section missing: Klipper cannot print files at all",
			"add \"["+SectionVirtualSDCard+"]\" with \"path: ~/printer_data/gcodes\" to printer.cfg")
	} else if o, ok := s.Option("path"); !ok || o.Value == "" {
		add(Finding{Severity: SeverityError, Code: CodeVirtualSDCardPath, Section: SectionVirtualSDCard, File: s.Loc.File, Line: s.Loc.Line,
			Message: "path is not set: Klipper will not start", Fix: "add \"path: ~/printer_data/gcodes\" to [" + SectionVirtualSDCard + "]"})
	}

	checkMacro(c, add)

	r.Printer = extractPrinter(c)
	for _, u := range r.Printer.Unknowns() {
		add(Finding{Severity: SeverityInfo, Code: CodeCompatUnknown, File: c.Path,
			Message: "not checked against jobs: " + u})
	}
	sort.SliceStable(r.Findings, func(i, j int) bool { return r.Findings[i].Severity > r.Findings[j].Severity })
	return r
}

// caseVariant finds a section whose name differs from name only in case.
func caseVariant(c *Config, name string) *Section {
	for _, s := range c.Sections() {
		if s.Name != name && strings.EqualFold(s.Name, name) {
			return s
		}
	}
	return nil
}

// checkMacro checks the SDCARD_PRINT_FILE macro of the original README:
// it must rename the built-in command and hand virtual_ files to SET_GCODE_FD.
func checkMacro(c *Config, add func(Finding)) {
	var macro *Section
	for _, s := range c.Sections() {
		name, ok := strings.CutPrefix(s.Name, "gcode_macro ")
		if ok && strings.EqualFold(strings.TrimSpace(name), MacroName) {
			macro = s
		}
	}
	if macro == nil {
		add(Finding{Severity: SeverityWarning, Code: CodeMacroMissing, Section: "gcode_macro " + MacroName, File: c.Path,
			Message: "macro missing: marketplace files started from Mainsail/Fluidd or SDCARD_PRINT_FILE will not print (lmntd's own jobs still do)",
			Fix:     "add to printer.cfg:\n" + MacroSnippet})
		return
	}
	at := func(o *Option) (string, int) {
		if o != nil {
			return o.Loc.File, o.Loc.Line
		}
		return macro.Loc.File, macro.Loc.Line
	}
	rename, _ := macro.Option("rename_existing")
	if rename == nil || strings.TrimSpace(rename.Value) == "" {
		f, l := at(rename)
		add(Finding{Severity: SeverityError, Code: CodeMacroBroken, Section: macro.Name, File: f, Line: l,
			Message: "rename_existing is not set: Klipper refuses a macro that replaces the built-in SDCARD_PRINT_FILE",
			Fix:     "add \"rename_existing: BASE_SDCARD_PRINT_FILE\" to the macro"})
		return
	}
	gcode, _ := macro.Option("gcode")
	body := ""
	if gcode != nil {
		body = strings.ToUpper(gcode.Value)
	}
	if !strings.Contains(body, "SET_GCODE_FD") || !strings.Contains(body, "VIRTUAL_") {
		f, l := at(gcode)
		add(Finding{Severity: SeverityError, Code: CodeMacroBroken, Section: macro.Name, File: f, Line: l,
			Message: "the macro does not hand virtual_ files to SET_GCODE_FD: marketplace files started by name will not print",
			Fix:     "use the macro of the lmntd documentation:\n" + MacroSnippet})
	}
	base := strings.ToUpper(strings.TrimSpace(rename.Value))
	if !strings.Contains(body, base) {
		f, l := at(gcode)
		add(Finding{Severity: SeverityWarning, Code: CodeMacroNoBase, Section: macro.Name, File: f, Line: l,
			Message: fmt.Sprintf("the macro never calls %s: ordinary files will no longer print", base),
			Fix:     fmt.Sprintf("call \"%s {rawparams}\" for files that do not start with virtual_", base)})
	}
}

// Kinematics whose stepper_x/y/z position limits are the bed's size.
var cartesianLike = map[string]bool{
	"cartesian": true, "corexy": true, "corexz": true, "hybrid_corexy": true, "hybrid_corexz": true,
	"limited_cartesian": true, "limited_corexy": true, "limited_corexz": true, "markforged": true,
}

func extractPrinter(c *Config) Printer {
	var p Printer
	kinUnknown := "kinematics unknown"
	if s, ok := c.Section("printer"); ok {
		if o, ok := s.Option("kinematics"); ok {
			p.Kinematics = strings.ToLower(strings.TrimSpace(o.Value))
		}
	}
	switch {
	case p.Kinematics == "":
		kinUnknown = "[printer] kinematics is not set"
	case cartesianLike[p.Kinematics]:
		kinUnknown = ""
	default:
		kinUnknown = fmt.Sprintf("kinematics %q: position limits do not describe the build volume", p.Kinematics)
	}
	axis := func(stepper string) Axis {
		if kinUnknown != "" {
			return Axis{Min: Measure{Unknown: kinUnknown}, Max: Measure{Unknown: kinUnknown}}
		}
		return Axis{
			Min: number(c, stepper, "position_min", ptr(0.0)),
			Max: number(c, stepper, "position_max", nil),
		}
	}
	p.X, p.Y, p.Z = axis("stepper_x"), axis("stepper_y"), axis("stepper_z")

	names := []string{}
	for _, s := range c.Sections() {
		if s.Name == "extruder" || (strings.HasPrefix(s.Name, "extruder") && isDigits(s.Name[len("extruder"):])) {
			names = append(names, s.Name)
		}
	}
	sort.SliceStable(names, func(i, j int) bool { return extruderIndex(names[i]) < extruderIndex(names[j]) })
	for _, n := range names {
		p.Extruders = append(p.Extruders, Extruder{
			Name:             n,
			NozzleDiameter:   number(c, n, "nozzle_diameter", nil),
			FilamentDiameter: number(c, n, "filament_diameter", nil),
			MaxTemp:          number(c, n, "max_temp", nil),
		})
	}
	if _, ok := c.Section("heater_bed"); ok {
		p.HeatedBed = true
		p.BedMaxTemp = number(c, "heater_bed", "max_temp", nil)
	} else {
		p.BedMaxTemp = Measure{Unknown: "printer.cfg has no [heater_bed] section"}
	}
	return p
}

func ptr(f float64) *float64 { return &f }

// number reads a float option like Klipper's getfloat; def is Klipper's
// default (nil: required).
func number(c *Config, section, option string, def *float64) Measure {
	s, ok := c.Section(section)
	if !ok {
		return Measure{Unknown: fmt.Sprintf("printer.cfg has no [%s] section", section)}
	}
	o, ok := s.Option(option)
	if !ok {
		if def != nil {
			return Measure{Value: *def, Known: true}
		}
		return Measure{Unknown: fmt.Sprintf("[%s] %s is not set", section, option)}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(o.Value), 64)
	loc := o.Loc
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return Measure{From: &loc, Unknown: fmt.Sprintf("[%s] %s %q at %s is not a number", section, option, o.Value, loc)}
	}
	return Measure{Value: v, Known: true, From: &loc}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func extruderIndex(name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "extruder"))
	if err != nil {
		return 0
	}
	return n
}

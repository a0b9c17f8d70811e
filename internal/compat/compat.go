// Package compat decides whether a decrypted job suits the printer it is
// about to print on, before anything reaches Klipper: the nozzle it was
// sliced for against printer.cfg's nozzle_diameter, the print's size against
// the X/Y/Z travel of the steppers, and its filament type against the one the
// owner configured (jobs.filament_type).
//
// A mismatch fails the job with a message that names it. A value that is not
// known, on either side, never blocks a job: it is listed as not checked, so
// that `lmnt doctor` and the job's log can say what was left unverified. Heating
// a 0.4 mm nozzle for a file sliced for 0.6 mm, or driving an axis into its end
// stop, costs the owner a print and maybe a part; a false refusal costs a
// marketplace purchase. Hence the tolerances are small but not zero.
package compat

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// Item names one property the check compares.
type Item string

// The items, in the order Check reports them.
const (
	Nozzle   Item = "nozzle_diameter"
	AxisX    Item = "x"
	AxisY    Item = "y"
	AxisZ    Item = "z"
	Filament Item = "filament_type"
)

// Default tolerances. Slicers and printer.cfg write the same nozzle as 0.4
// and 0.400; neighbouring real nozzle sizes (0.2/0.25, 0.4/0.5) differ by
// 0.05 mm or more. Axis limits are compared with room for the rounding of
// slicers that print extents with two or three decimals.
const (
	DefaultNozzleTolerance = 0.02 // mm
	DefaultAxisTolerance   = 0.05 // mm
)

// Options are the owner's side of the comparison.
type Options struct {
	// FilamentType is the filament loaded in the printer (config
	// jobs.filament_type); empty means the filament is not checked.
	FilamentType string
	// NozzleTolerance and AxisTolerance in mm; zero means the default.
	NozzleTolerance float64
	AxisTolerance   float64
}

func (o Options) withDefaults() Options {
	if !(o.NozzleTolerance > 0) {
		o.NozzleTolerance = DefaultNozzleTolerance
	}
	if !(o.AxisTolerance > 0) {
		o.AxisTolerance = DefaultAxisTolerance
	}
	return o
}

// Mismatch is one reason the job does not suit the printer.
type Mismatch struct {
	Item    Item   `json:"item"`
	Message string `json:"message"`
}

// Unchecked is one item the check could not compare, and why.
type Unchecked struct {
	Item   Item   `json:"item"`
	Reason string `json:"reason"`
}

func (u Unchecked) String() string { return string(u.Item) + ": " + u.Reason }

// Note is something worth telling the owner that does not block the job.
type Note struct {
	Item    Item   `json:"item"`
	Message string `json:"message"`
}

// Result is the outcome of Check.
type Result struct {
	Mismatches []Mismatch  `json:"mismatches,omitempty"`
	Unchecked  []Unchecked `json:"unchecked,omitempty"`
	Notes      []Note      `json:"notes,omitempty"`
}

// OK reports whether the job may print.
func (r Result) OK() bool { return len(r.Mismatches) == 0 }

// Err is nil when the job may print, else an *IncompatibleError.
func (r Result) Err() error {
	if r.OK() {
		return nil
	}
	return &IncompatibleError{Mismatches: append([]Mismatch(nil), r.Mismatches...)}
}

// ErrIncompatible matches every *IncompatibleError with errors.Is.
var ErrIncompatible = errors.New("compat: job does not suit this printer")

// IncompatibleError lists why a job must not print. Its text is the
// mismatches' messages, meant for the job's failure message.
type IncompatibleError struct{ Mismatches []Mismatch }

func (e *IncompatibleError) Error() string {
	msgs := make([]string, len(e.Mismatches))
	for i, m := range e.Mismatches {
		msgs[i] = m.Message
	}
	return strings.Join(msgs, "; ")
}

// Is makes errors.Is(err, ErrIncompatible) true.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

// Check compares a decrypted job, as the G-code gate described it, with
// printer p (from printer.cfg) and the owner's options. Zero values in job
// are unknown; a nil job is one about which nothing is known.
func Check(job *gcode.Metadata, p klippercfg.Printer, opts Options) Result {
	if job == nil {
		job = &gcode.Metadata{}
	}
	opts = opts.withDefaults()
	var r Result
	checkNozzle(&r, job, p, opts)
	checkXY(&r, AxisX, job, p.X, opts, func(e *gcode.Extents) (float64, float64) { return e.MinX, e.MaxX })
	checkXY(&r, AxisY, job, p.Y, opts, func(e *gcode.Extents) (float64, float64) { return e.MinY, e.MaxY })
	checkZ(&r, job, p.Z, opts)
	checkFilament(&r, job, opts)
	return r
}

// Coverage lists what no job can be checked against on this printer, for
// `lmnt doctor`: the printer.cfg values that are unknown and a filament type
// that is not configured. What depends on each job's file is not included.
func Coverage(p klippercfg.Printer, opts Options) []Unchecked {
	var out []Unchecked
	if m := p.NozzleDiameter(); !known(m) {
		out = append(out, Unchecked{Nozzle, unknownReason(m)})
	}
	for _, a := range []struct {
		item Item
		axis klippercfg.Axis
	}{{AxisX, p.X}, {AxisY, p.Y}} {
		if !known(a.axis.Min) || !known(a.axis.Max) {
			out = append(out, Unchecked{a.item, axisUnknownReason(a.axis)})
		}
	}
	if !known(p.Z.Max) {
		out = append(out, Unchecked{AxisZ, unknownReason(p.Z.Max)})
	}
	if normFilament(opts.FilamentType) == "" {
		out = append(out, Unchecked{Filament, filamentNotConfigured})
	}
	return out
}

const filamentNotConfigured = "no filament type configured (jobs.filament_type in lmntd.toml)"

func checkNozzle(r *Result, job *gcode.Metadata, p klippercfg.Printer, opts Options) {
	m := p.NozzleDiameter()
	switch {
	case !positive(job.NozzleDiameter):
		r.Unchecked = append(r.Unchecked, Unchecked{Nozzle, "the file does not state the nozzle it was sliced for"})
	case !known(m):
		r.Unchecked = append(r.Unchecked, Unchecked{Nozzle, unknownReason(m)})
	case math.Abs(job.NozzleDiameter-m.Value) > opts.NozzleTolerance+floatSlack:
		r.Mismatches = append(r.Mismatches, Mismatch{Nozzle, fmt.Sprintf(
			"sliced for a %s mm nozzle, but the printer has a %s mm nozzle (nozzle_diameter%s); if the nozzle was changed, update printer.cfg and restart Klipper",
			mm(job.NozzleDiameter), mm(m.Value), where(m))})
	}
}

// checkXY compares the print's extent along one horizontal axis with the
// axis's travel. Only slicer-stated extents are used: the moves of a file
// include purge lines and parking positions that the slicer's profile put
// there for this very printer.
func checkXY(r *Result, item Item, job *gcode.Metadata, a klippercfg.Axis, opts Options, span func(*gcode.Extents) (float64, float64)) {
	if job.Extents == nil {
		r.Unchecked = append(r.Unchecked, Unchecked{item, "the file does not state the print's extents"})
		return
	}
	if !known(a.Min) || !known(a.Max) {
		r.Unchecked = append(r.Unchecked, Unchecked{item, axisUnknownReason(a)})
		return
	}
	lo, hi := span(job.Extents)
	if !finite(lo) || !finite(hi) {
		r.Unchecked = append(r.Unchecked, Unchecked{item, "the file's extents are not numbers"})
		return
	}
	axis := strings.ToUpper(string(item))
	switch {
	case hi-lo > a.Max.Value-a.Min.Value+opts.AxisTolerance+floatSlack:
		r.Mismatches = append(r.Mismatches, Mismatch{item, fmt.Sprintf(
			"the print is %s mm wide in %s, but the %s axis travels only %s mm (%s to %s, stepper_%s position_max%s)",
			mm(hi-lo), axis, axis, mm(a.Max.Value-a.Min.Value), mm(a.Min.Value), mm(a.Max.Value), item, where(a.Max))})
	case lo < a.Min.Value-opts.AxisTolerance-floatSlack || hi > a.Max.Value+opts.AxisTolerance+floatSlack:
		r.Mismatches = append(r.Mismatches, Mismatch{item, fmt.Sprintf(
			"the print spans %s %s to %s mm, outside the %s axis's travel %s to %s mm (stepper_%s position_max%s); it was sliced for another bed",
			axis, mm(lo), mm(hi), axis, mm(a.Min.Value), mm(a.Max.Value), item, where(a.Max))})
	}
}

// checkZ compares the object's height with Z's travel. Moves above the
// object (end-of-print lifts) are only noted: Klipper refuses such a move
// with "Move out of range" after the object is done, which costs nothing.
func checkZ(r *Result, job *gcode.Metadata, z klippercfg.Axis, opts Options) {
	height := job.ObjectHeight
	if !positive(height) && job.Extents != nil {
		height = job.Extents.MaxZ
	}
	switch {
	case !positive(height):
		r.Unchecked = append(r.Unchecked, Unchecked{AxisZ, "the file does not state the object's height"})
		return
	case !known(z.Max):
		r.Unchecked = append(r.Unchecked, Unchecked{AxisZ, unknownReason(z.Max)})
		return
	case height > z.Max.Value+opts.AxisTolerance+floatSlack:
		r.Mismatches = append(r.Mismatches, Mismatch{AxisZ, fmt.Sprintf(
			"the object is %s mm tall, but Z travels only to %s mm (stepper_z position_max%s)",
			mm(height), mm(z.Max.Value), where(z.Max))})
		return
	}
	if positive(job.MaxZ) && job.MaxZ > z.Max.Value+opts.AxisTolerance {
		r.Notes = append(r.Notes, Note{AxisZ, fmt.Sprintf(
			"moves after the object reach Z %s mm, above Z's %s mm: Klipper will stop there with \"Move out of range\"",
			mm(job.MaxZ), mm(z.Max.Value))})
	}
}

func checkFilament(r *Result, job *gcode.Metadata, opts Options) {
	loaded, sliced := normFilament(opts.FilamentType), normFilament(job.FilamentType)
	switch {
	case loaded == "":
		r.Unchecked = append(r.Unchecked, Unchecked{Filament, filamentNotConfigured})
	case sliced == "":
		r.Unchecked = append(r.Unchecked, Unchecked{Filament, "the file does not state its filament type"})
	case loaded != sliced:
		r.Mismatches = append(r.Mismatches, Mismatch{Filament, fmt.Sprintf(
			"sliced for %s, but the printer is set up for %s (jobs.filament_type)",
			sanitize(job.FilamentType), sanitize(opts.FilamentType))})
	}
}

// normFilament makes "pla ", "PLA" and "Pla" the same material.
func normFilament(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

// sanitize keeps a file-supplied string fit for a one-line message: the
// filament type comes from the (untrusted) G-code.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	const maxLen = 40
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return s
}

// floatSlack keeps binary rounding (0.4-0.38 = 0.020000000000000018) from
// deciding a comparison that is exactly at the tolerance.
const floatSlack = 1e-9

func known(m klippercfg.Measure) bool { return m.Known && finite(m.Value) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func positive(v float64) bool { return v > 0 && !math.IsInf(v, 0) }

// unknownReason is why m is unknown. A zero Measure (printer.cfg not read
// yet) has no reason of its own.
func unknownReason(m klippercfg.Measure) string {
	if m.Unknown != "" {
		return m.Unknown
	}
	if m.Known {
		return fmt.Sprintf("printer.cfg's value %v is not a number", m.Value)
	}
	return "printer.cfg has not been read"
}

func axisUnknownReason(a klippercfg.Axis) string {
	if !known(a.Max) {
		return unknownReason(a.Max)
	}
	return unknownReason(a.Min)
}

// where names the printer.cfg line a value came from, by base name only:
// the message goes to the marketplace, which has no business knowing the
// owner's home directory.
func where(m klippercfg.Measure) string {
	if m.From == nil || m.From.File == "" {
		return ""
	}
	loc := filepath.Base(m.From.File)
	if m.From.Line > 0 {
		loc += ":" + strconv.Itoa(m.From.Line)
	}
	return " at " + loc
}

// mm formats a length without float noise: 0.4, 235, 20.04.
func mm(v float64) string { return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64) }

// Package mdstub builds the metadata stub of a job: a small file in Klipper's
// gcodes directory that carries only the slicer comment lines Moonraker's
// metadata extractor reads (and the thumbnails), so Mainsail and Fluidd show
// an lmntd job's picture, time estimate and layer count like a local file's,
// while the G-code itself stays in the sealed memfd.
//
// Why a file: Moonraker has no API to attach metadata to a file that is not
// in its gcodes root. get_file_metadata, the history's grab_job_metadata and
// the current-file view all look up print_stats.filename in the metadata
// storage that only its extractor (a subprocess reading the file from disk)
// fills. So the job's print_stats.filename names this stub.
//
// What goes in follows Moonraker's components/file_manager/metadata.py:
// the extractor reads the first and the last MiB of the file (READ_SIZE),
// identifies the slicer from the first MiB, then runs per-slicer regular
// expressions on the "header" (first MiB) or the "footer" (last MiB); the
// thumbnails are found anywhere in both. The stub copies, for each of those
// expressions, the one whole comment line where Moonraker finds its value
// in the full file, in the file's order, so the same expression finds the
// same value in the stub. Values Moonraker derives from G-code moves are
// rewritten as the comment form it also reads (object height) or left out
// (Cura's first-layer temperatures: they are M109/M190 commands).
package mdstub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
)

// Window is how much of each end of a file Moonraker reads (READ_SIZE).
const Window = 1 << 20

// GuardCommand is the stub's first line: a G-code command the [secure_print]
// extra defines to fail at once, so printing the stub itself (from
// Mainsail's file list or history) stops with an LMNT: message instead of
// running a file that has no G-code.
const GuardCommand = "LMNT_METADATA_STUB"

// guardLine explains the file to whoever opens it; the comment after the
// command keeps Moonraker's and Klipper's parsers indifferent.
const guardLine = GuardCommand + " ; lmntd: metadata of an encrypted job, not printable; the job prints from memory\n"

// maxThumbnailBytes bounds the thumbnails copied, so the stub stays under
// two windows and Moonraker's header and footer regions never overlap in a
// way the full file's did not.
const maxThumbnailBytes = Window - 64*1024

type region int

const (
	header region = iota
	footer
)

// probe is one of Moonraker's per-slicer expressions, reduced to what finds
// the line: the stub keeps the line of the first match in the region, or,
// for expressions Moonraker takes the largest value of, the line of the
// largest.
type probe struct {
	re      *regexp.Regexp
	where   region
	largest bool
}

func p(where region, expr string) probe {
	return probe{re: regexp.MustCompile(expr), where: where}
}

// Moonraker's placeholders: (%F) float, (%D) integer, (%S) rest of line.
const flt = `([0-9]*\.?[0-9]+)`

// Slicer families as Moonraker's identify() tells them apart, tried in its
// order (derived classes before their parents).
type family struct {
	name string
	// identify returns where the line that names the slicer starts, or -1.
	identify func(head []byte) int
	probes   []probe
	// prusaHeight: object height from ";BEFORE_LAYER_CHANGE" blocks, or the
	// largest "G1 Z.. F" in the footer (PrusaSlicer.parse_object_height).
	prusaHeight bool
}

var prusaProbes = []probe{
	p(footer, `; first_layer_height = `+flt),
	p(footer, `; layer_height = `+flt),
	p(footer, `filament\sused\s\[mm\]\s=\s`),
	p(footer, `total\sfilament\sused\s\[g\]\s=\s`+flt),
	p(footer, `filament\sused\s\[g\]\s=\s`),
	p(footer, `;\sfilament_type\s=\s`),
	p(footer, `;\sfilament_settings_id\s=\s`),
	p(footer, `;\sfilament_colour\s=\s`),
	p(footer, `;\sextruder_colour\s=\s`),
	p(footer, `;\s(?:nozzle_)?temperature\s=\s`),
	p(footer, `;\sreferenced_tools\s=\s`),
	p(footer, `;\ssingle_extruder_multi_material\s=\s[0-9]+`),
	p(footer, `;\sestimated\sprinting\stime`),
	p(footer, `; first_layer_temperature = `+flt),
	p(footer, `; first_layer_bed_temperature = `+flt),
	p(footer, `; chamber_temperature = `+flt),
	p(footer, `;\snozzle_diameter\s=\s`+flt),
	p(footer, `; total layers count = [0-9]+`),
	p(footer, `; total toolchanges = [0-9]+`),
	p(footer, `; total filament change = [0-9]+`),
	p(footer, `; printer_vendor = `),
	p(footer, `; printer_model = `),
	p(footer, `; printer_variant = `),
	p(footer, `; profile_version = `),
}

func with(base []probe, extra ...probe) []probe {
	return append(append([]probe{}, base...), extra...)
}

func inHeader(ps []probe) []probe {
	out := make([]probe, len(ps))
	for i, pr := range ps {
		pr.where = header
		out[i] = pr
	}
	return out
}

var families = []family{
	{name: "Slic3r PE", identify: search(`Slic3r\sPrusa\sEdition\s(.*)\son`), prusaHeight: true,
		probes: with(prusaProbes, p(footer, `filament\sused\s=\s`+flt+`mm`))},
	{name: "Slic3r", identify: search(`Slic3r\s(\d.*)\son`), prusaHeight: true,
		probes: with(prusaProbes, p(footer, `;\sfilament\_length\_m\s=\s`+flt), p(footer, `;\sfilament\smass\_g\s=\s`+flt))},
	// BambuStudio reads its config from the header (config_data).
	{name: "BambuStudio", identify: search(`; BambuStudio[^ ]* ([^\n]+)`),
		probes: with(inHeader(prusaProbes),
			p(header, `; initial_layer_print_height = `+flt), p(header, `; max_z_height: `+flt),
			p(header, `; total filament length \[mm\] : `+flt), p(header, `; total filament weight \[g\] : `+flt),
			p(header, `; nozzle_temperature_initial_layer = `+flt), p(header, `; hot_plate_temp_initial_layer = `+flt),
			p(header, `; chamber_temperatures = `+flt), p(header, `; total layer number: [0-9]+`))},
	{name: "PrusaSlicer", prusaHeight: true, probes: prusaProbes, identify: identifyPrusa},
	{name: "Cura", identify: search(`Cura_SteamEngine\s(.*)`), probes: []probe{
		p(header, `;MINZ:`+flt), p(header, `;Layer\sheight:\s`+flt), p(header, `;MAXZ:`+flt),
		p(header, `;Filament\sused:\s`), p(header, `;Filament\sweight\s=\s\[`),
		p(header, `;Filament\stype\s=\s`), p(header, `;Filament\sname\s=\s`),
		{re: regexp.MustCompile(`;TIME:` + flt), where: header, largest: true},
		p(header, `;LAYER_COUNT\:[0-9]+`), p(header, `;Nozzle\sdiameter\s=\s`+flt),
	}},
}

// Moonraker's generic thumbnail expression (BaseSlicer.parse_thumbnails).
var thumbnailRE = regexp.MustCompile(`(?:thumbnail(?:_[A-Za-z0-9]+)?) begin[;/\+=\w\s]+?; thumbnail(?:_[A-Za-z0-9]+)? end`)

var (
	beforeLayerRE = regexp.MustCompile(`;BEFORE_LAYER_CHANGE\n(?:.*\n)?;(\d+\.?\d*)`)
	g1ZRE         = regexp.MustCompile(`G1\sZ` + flt + `\sF`)
)

// ErrUnknownSlicer: Moonraker would not identify the file's slicer, so a
// stub could carry nothing it reads but thumbnails.
var ErrUnknownSlicer = errors.New("mdstub: slicer not recognised by Moonraker's rules")

// Stub is a built stub.
type Stub struct {
	Data   []byte
	Slicer string // Moonraker's slicer family
}

// Build makes the stub of a G-code file of size bytes read through r. Only
// the two windows Moonraker reads are read.
func Build(r io.ReaderAt, size int64) (Stub, error) {
	data, err := windows(r, size)
	if err != nil {
		return Stub{}, err
	}
	// The windows are plaintext G-code: wiped once the stub's lines are
	// copied out, not left for the garbage collector.
	defer clear(data)
	head := data[:min(len(data), Window)]
	foot := data[max(0, len(data)-Window):]
	footBase := len(data) - len(foot)

	fam, idLoc := identify(head)
	if fam == nil {
		return Stub{}, ErrUnknownSlicer
	}
	// Line spans (start offsets in data) to copy, each at most once.
	spans := map[int]int{}
	addLine := func(at int) {
		start := bytes.LastIndexByte(data[:at], '\n') + 1
		end := bytes.IndexByte(data[at:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += at + 1
		}
		spans[start] = end
	}
	addLine(idLoc)
	for _, pr := range fam.probes {
		buf, base := head, 0
		if pr.where == footer {
			buf, base = foot, footBase
		}
		if at := pr.find(buf); at >= 0 {
			addLine(base + at)
		}
	}
	thumbBytes := 0
	for _, loc := range thumbnailRE.FindAllIndex(data, -1) {
		if thumbBytes+loc[1]-loc[0] > maxThumbnailBytes {
			continue
		}
		thumbBytes += loc[1] - loc[0]
		start := bytes.LastIndexByte(data[:loc[0]], '\n') + 1
		end := bytes.IndexByte(data[loc[1]:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += loc[1] + 1
		}
		spans[start] = end
	}

	starts := make([]int, 0, len(spans))
	for s := range spans {
		starts = append(starts, s)
	}
	sort.Ints(starts)
	var out bytes.Buffer
	out.WriteString(guardLine)
	last := -1
	for _, s := range starts {
		if s < last {
			continue // inside a span already copied (a thumbnail block)
		}
		line := data[s:spans[s]]
		out.Write(line)
		if len(line) == 0 || line[len(line)-1] != '\n' {
			out.WriteByte('\n')
		}
		last = spans[s]
	}
	if fam.prusaHeight {
		if h, ok := prusaObjectHeight(foot); ok {
			// Last, so that no line follows that the expression's optional
			// middle line could swallow.
			fmt.Fprintf(&out, ";BEFORE_LAYER_CHANGE\n;%s\n", h)
		}
	}
	return Stub{Data: out.Bytes(), Slicer: fam.name}, nil
}

// windows returns what Moonraker's from_file reads: the first Window bytes,
// then the last Window bytes (or the rest) of a larger file.
func windows(r io.ReaderAt, size int64) ([]byte, error) {
	if size <= 2*Window {
		buf := make([]byte, size)
		if _, err := r.ReadAt(buf, 0); err != nil && !(errors.Is(err, io.EOF) && size == 0) {
			return nil, fmt.Errorf("mdstub: reading the file: %w", err)
		}
		return buf, nil
	}
	buf := make([]byte, 2*Window)
	if _, err := r.ReadAt(buf[:Window], 0); err != nil {
		return nil, fmt.Errorf("mdstub: reading the file's start: %w", err)
	}
	if _, err := r.ReadAt(buf[Window:], size-Window); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("mdstub: reading the file's end: %w", err)
	}
	return buf, nil
}

func identify(head []byte) (*family, int) {
	for i := range families {
		if at := families[i].identify(head); at >= 0 {
			return &families[i], at
		}
	}
	return nil, -1
}

func search(expr string) func([]byte) int {
	re := regexp.MustCompile(expr)
	return func(head []byte) int {
		if loc := re.FindIndex(head); loc != nil {
			return loc[0]
		}
		return -1
	}
}

var (
	generatedByRE  = regexp.MustCompile(`; generated by (.+?) on \d{4}-\d{2}-\d{2} at \d{2}:\d{2}:\d{2}`)
	prusaAliasesRE = regexp.MustCompile(`(PrusaSlicer|SuperSlicer|OrcaSlicer|MomentSlicer|SliCR-3D|A3dp-Slicer|QIDISlicer)\s(.*)\son`)
)

// identifyPrusa is PrusaSlicer.identify: the generic "generated by" line
// (unless it names a slicer Moonraker has a derived class for), else a
// known fork's name.
func identifyPrusa(head []byte) int {
	if m := generatedByRE.FindSubmatchIndex(head); m != nil {
		if excludedGenerator(head[m[2]:m[3]]) {
			return -1
		}
		return m[0]
	}
	if loc := prusaAliasesRE.FindIndex(head); loc != nil {
		return loc[0]
	}
	return -1
}

// excludedGenerator mirrors PrusaSlicer.get_exclusions: the "generated by"
// line of a slicer with its own derived class is not PrusaSlicer's.
func excludedGenerator(gen []byte) bool {
	name := gen
	if i := bytes.LastIndexByte(gen, ' '); i >= 0 {
		name = gen[:i]
	}
	switch string(bytes.ToLower(name)) {
	case "slic3r prusa edition", "slic3r", "bambustudio":
		return true
	}
	return false
}

func (pr probe) find(buf []byte) int {
	if !pr.largest {
		if loc := pr.re.FindIndex(buf); loc != nil {
			return loc[0]
		}
		return -1
	}
	best, at := -1.0, -1
	for _, m := range pr.re.FindAllSubmatchIndex(buf, -1) {
		v, err := strconv.ParseFloat(string(buf[m[2]:m[3]]), 64)
		if err == nil && v > best {
			best, at = v, m[0]
		}
	}
	return at
}

// prusaObjectHeight is PrusaSlicer.parse_object_height on the footer, as
// the digits the stub's ";BEFORE_LAYER_CHANGE" block carries.
func prusaObjectHeight(foot []byte) (string, bool) {
	best, found := 0.0, false
	for _, m := range beforeLayerRE.FindAllSubmatch(foot, -1) {
		if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil && (!found || v > best) {
			best, found = v, true
		}
	}
	if !found {
		for _, m := range g1ZRE.FindAllSubmatch(foot, -1) {
			if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil && (!found || v > best) {
				best, found = v, true
			}
		}
	}
	if !found {
		return "", false
	}
	s := strconv.FormatFloat(best, 'f', -1, 64)
	if !bytes.ContainsRune([]byte(s), '.') {
		s += ".0"
	}
	return s, true
}

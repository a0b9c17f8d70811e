// Package gcode inspects a G-code stream once, as it flows from decryption into
// its sealed memfd: it is the gate that decides whether the bytes may reach
// Klipper at all, and it extracts the slicer's metadata and thumbnails on the
// way, in bounded memory and without a second pass.
//
// The gate rejects, naming the reason and byte offset (*RejectError):
//   - bytes that are not UTF-8 (Klipper's virtual_sdcard pauses silently, with
//     no message, on the first undecodable byte) and NUL bytes;
//   - lines longer than Options.MaxLineLength;
//   - streams that are not G-code: more than 16 lines that are not
//     G-code-shaped in one of the successive 256-line windows, fewer than
//     Options.MinCommands commands, or no motion command at all. The output of
//     a wrong key is random bytes and fails the UTF-8 rule within its first
//     few bytes; the shape rules catch plaintext that is simply not G-code.
//
// A line is G-code-shaped when, after leading blanks and an optional N line
// number, it is empty, a ';' comment, a classic code (a G, M or T word followed
// by a digit), a lone '%' program marker, or a Klipper extended command: a
// name of letters, digits and underscores followed only by KEY=VALUE
// parameters (PRINT_START EXTRUDER=200, EXCLUDE_OBJECT_START NAME=part_1) or a
// comment. Klipper itself refuses extended commands whose parameters lack '='.
package gcode

import (
	"bytes"
	"strconv"
)

// Defaults of Options; each is used when the field is zero.
const (
	// DefaultMaxLineLength bounds one line. The longest lines slicers really
	// write are single-line JSON or polygon lists whose size grows with the
	// number of objects on the plate: PrusaSlicer's "; objects_info = {…}",
	// Klipper's EXCLUDE_OBJECT_DEFINE … POLYGON=[[x,y],…] (a few KiB per
	// object), config lines carrying escaped custom G-code (a few KiB), and
	// thumbnail base64 (78 characters a line). 1 MiB is two orders of
	// magnitude above a crowded plate and still refuses a megabytes-long
	// "line" of non-G-code. Memory does not depend on it: the inspector never
	// buffers more than linePrefixCap bytes of a line.
	DefaultMaxLineLength = 1 << 20
	// DefaultMinCommands: every print needs at least homing, heating and a
	// move; real slicer output has thousands of commands. Three also makes a
	// lucky short run of random bytes that happens to be valid UTF-8 fail.
	DefaultMinCommands = 3
	// DefaultMaxThumbnailBytes caps one decoded thumbnail. PrusaSlicer's
	// 400x300 PNG is ~9 KB, Bambu's 512x512 PNG a few hundred KB, and a QOI
	// image cannot exceed 5 bytes a pixel (600 KB at 400x300).
	DefaultMaxThumbnailBytes = 1 << 20
	// DefaultMaxThumbnailTotal caps all thumbnails together, keeping the
	// pipeline's memory small whatever the file says.
	DefaultMaxThumbnailTotal = 2 << 20
	// DefaultMaxThumbnails caps how many thumbnails are kept (slicers write 1–4).
	DefaultMaxThumbnails = 8
)

const (
	// gcodeWindow and notGCodeBudget define "enough G-code-shaped lines":
	// in each run of gcodeWindow lines (lines 1–256, 257–512, …) at most
	// notGCodeBudget may be something else. Every line of every real
	// slicer fixture is G-code-shaped (measured: 0 exceptions in 1.2 million
	// lines); the budget leaves room for a few stray lines of hand-written
	// start/end G-code, e.g. RepRap "(…)" comments. Prose, CSV or an ASCII
	// STL (facet normal…, vertex…) fail within their first window. The
	// budget is absolute, so a short file's single, partial window gets the
	// same 16 lines of slack, no more.
	gcodeWindow    = 256
	notGCodeBudget = 16
	// linePrefixCap is how much of a line the inspector looks at (and at
	// most buffers when a line spans two Writes). Metadata comments, thumbnail
	// base64 lines and command words all fit; longer lines are only counted.
	linePrefixCap = 4096
)

// Options tunes the inspector; the zero value gives the documented defaults.
type Options struct {
	MaxLineLength     int // bytes per line, excluding "\n"; default DefaultMaxLineLength
	MinCommands       int // G-code commands the stream must hold; default DefaultMinCommands
	MaxThumbnailBytes int // decoded bytes per thumbnail; larger ones are skipped
	MaxThumbnailTotal int // decoded bytes of all thumbnails together
	MaxThumbnails     int // thumbnails kept; later ones are skipped
}

func (o Options) withDefaults() Options {
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.MinCommands <= 0 {
		o.MinCommands = DefaultMinCommands
	}
	if o.MaxThumbnailBytes <= 0 {
		o.MaxThumbnailBytes = DefaultMaxThumbnailBytes
	}
	if o.MaxThumbnailTotal <= 0 {
		o.MaxThumbnailTotal = DefaultMaxThumbnailTotal
	}
	if o.MaxThumbnails <= 0 {
		o.MaxThumbnails = DefaultMaxThumbnails
	}
	return o
}

// Inspector is an io.Writer that gates and inspects one G-code stream. Feed it
// the stream in any chunking (the verdict and metadata do not depend on it),
// then call Finish. It is not safe for concurrent use.
type Inspector struct {
	opts     Options
	utf      utf8Checker
	err      *RejectError
	finished bool

	// Line scanning. offset is the stream offset of the next byte the line
	// scanner will see; lineStart/lineNo describe the line in progress.
	offset    int64
	lineStart int64
	lineNo    int64
	lineLen   int    // bytes of the line in progress seen so far
	carry     []byte // prefix of the line in progress when it spans Writes

	// Shape accounting (see gcodeWindow).
	windowLines     int
	windowNotGCode  int
	windowFirstAt   int64 // offset of the window's first non-G-code line
	windowFirstLine int64
	commands        int64
	nonBlankSeen    bool

	motion motionState
	meta   metaState
	md     *Metadata // the result, once Finish has passed
}

// NewInspector returns an inspector for one stream.
func NewInspector(opts Options) *Inspector {
	in := &Inspector{opts: opts.withDefaults(), lineNo: 1}
	in.motion.init()
	in.meta.init(in.opts)
	return in
}

// Write inspects the next chunk. It returns a *RejectError at the first
// violation, and that same error from every later call.
func (in *Inspector) Write(p []byte) (int, error) {
	if in.err != nil {
		return 0, in.err
	}
	if in.finished {
		return 0, ErrFinished
	}
	rest := p
	if in.utf.nheld > 0 {
		used, done, v := in.utf.complete(rest)
		if v != nil {
			return 0, in.rejectViolation(v)
		}
		if !done {
			return len(p), nil
		}
		// The held sequence is valid: hand it to the line scanner.
		held := in.utf.held[:in.utf.nheld]
		in.utf.nheld = 0
		if err := in.scanLines(held); err != nil {
			return 0, err
		}
		rest = rest[used:]
	}
	base := in.offset
	valid, v := in.utf.scan(rest, base)
	// Lines before the first bad byte are judged first, so the verdict is
	// the earliest violation in stream order whatever the chunking.
	if err := in.scanLines(rest[:valid]); err != nil {
		return 0, err
	}
	if v != nil {
		return 0, in.rejectViolation(v)
	}
	return len(p), nil
}

// Finish runs the end-of-stream checks and returns the metadata. After a
// rejection it returns that rejection. Finish may be called more than once.
func (in *Inspector) Finish() (*Metadata, error) {
	if in.err != nil {
		return nil, in.err
	}
	if !in.finished {
		in.finished = true
		if err := in.finishChecks(); err != nil {
			return nil, err
		}
		in.md = in.meta.result(&in.motion)
	}
	return in.md, nil
}

func (in *Inspector) finishChecks() error {
	if in.utf.nheld > 0 {
		return in.reject(ReasonInvalidUTF8, in.utf.heldAt, "UTF-8 sequence truncated by the end of the stream")
	}
	if in.lineLen > 0 {
		// The last line has no "\n"; Klipper still runs it.
		if err := in.endLine(in.carry, true); err != nil {
			return err
		}
	}
	if !in.nonBlankSeen {
		return in.reject(ReasonEmpty, in.offset, "no G-code in the stream")
	}
	if in.commands < int64(in.opts.MinCommands) {
		return in.reject(ReasonTooFewCommands, in.offset,
			strconv.FormatInt(in.commands, 10)+" commands, at least "+strconv.Itoa(in.opts.MinCommands)+" required")
	}
	if !in.motion.moveSeen {
		return in.reject(ReasonNoMotion, in.offset, "no G0/G1/G2/G3 move in the stream")
	}
	return nil
}

func (in *Inspector) rejectViolation(v *violation) error {
	return in.reject(v.reason, v.at, v.detail)
}

// reject records the verdict. The line number of an offset inside the line in
// progress is lineNo; offsets before it only come from window checks, which
// carry their own line.
func (in *Inspector) reject(r Reason, at int64, detail string) error {
	return in.rejectAtLine(r, at, in.lineNo, detail)
}

func (in *Inspector) rejectAtLine(r Reason, at, line int64, detail string) error {
	in.err = &RejectError{Reason: r, Offset: at, Line: line, Detail: detail}
	return in.err
}

// scanLines feeds bytes already known to be valid UTF-8 without NUL.
//
// Besides the line ends it tracks where the next 'Z' or 'z' is, with one
// vectorised search per occurrence: a line before that position cannot hold
// a Z word, so the G1 lines that make up most of a file skip the search.
//
// With absolute extrusion the same G0/G1 lines only move E while the
// toolhead is not above the highest extrusion: they are not parsed but
// remembered as a run of lines (run, in chunk), and the tracker reads the
// run's last E word only when something else happens (any other line, or
// the end of the chunk), so one number is parsed per run, not per line.
func (in *Inspector) scanLines(p []byte) error {
	max := in.opts.MaxLineLength
	nextUpper, nextLower := indexOrLen(p, 'Z'), indexOrLen(p, 'z')
	chunk := p
	runStart, runEnd := -1, -1 // the run of unparsed absolute-E moves in chunk
	defer func() {
		if runStart >= 0 {
			in.motion.resolveE(chunk[runStart:runEnd])
		}
	}()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if in.lineLen+len(p) > max {
				return in.reject(ReasonLineTooLong, in.lineStart, "line longer than "+strconv.Itoa(max)+" bytes")
			}
			in.keep(p)
			in.lineLen += len(p)
			in.offset += int64(len(p))
			return nil
		}
		if in.lineLen+i > max {
			return in.reject(ReasonLineTooLong, in.lineStart, "line longer than "+strconv.Itoa(max)+" bytes")
		}
		var line []byte
		mayHaveZ := true
		if in.lineLen == 0 {
			line = p[:i]
			mayHaveZ = nextUpper < i || nextLower < i
			// Fast path for the bulk of every file: "G1 X… Y… E…" with
			// no Z, while such a move changes nothing the tracker keeps
			// but, with absolute extrusion, the E position.
			if !mayHaveZ && i >= 3 && line[0] == 'G' && line[2] == ' ' && in.meta.thumb == nil && in.windowLines < gcodeWindow {
				switch {
				case line[1] == '1' && in.motion.plainMoveIsNoop:
					in.commands++
					in.windowLines++
					goto next
				case (line[1] == '1' || line[1] == '0') && in.motion.plainMoveSetsE:
					if runStart < 0 {
						runStart = len(chunk) - len(p)
					}
					runEnd = len(chunk) - len(p) + i
					in.commands++
					in.windowLines++
					goto next
				}
			}
		} else {
			in.keep(p[:i])
			line = in.carry
		}
		if runStart >= 0 {
			in.motion.resolveE(chunk[runStart:runEnd])
			runStart = -1
		}
		in.lineLen += i
		if err := in.endLine(line, mayHaveZ); err != nil {
			return err
		}
	next:
		in.offset += int64(i) + 1
		in.lineStart = in.offset
		in.lineNo++
		in.lineLen = 0
		in.carry = in.carry[:0]
		p = p[i+1:]
		if nextUpper -= i + 1; nextUpper < 0 {
			nextUpper = indexOrLen(p, 'Z')
		}
		if nextLower -= i + 1; nextLower < 0 {
			nextLower = indexOrLen(p, 'z')
		}
	}
	return nil
}

func indexOrLen(p []byte, c byte) int {
	if i := bytes.IndexByte(p, c); i >= 0 {
		return i
	}
	return len(p)
}

// keep appends to the carried prefix of the line in progress, up to linePrefixCap.
func (in *Inspector) keep(b []byte) {
	if room := linePrefixCap - len(in.carry); room > 0 {
		if in.carry == nil {
			in.carry = make([]byte, 0, linePrefixCap)
		}
		in.carry = append(in.carry, b[:min(room, len(b))]...)
	}
}

// endLine judges and inspects one complete line (line may be longer than
// what the inspector looks at: only its first linePrefixCap bytes count, in
// every chunking). mayHaveZ false means the line is known to hold no 'Z'/'z'.
func (in *Inspector) endLine(line []byte, mayHaveZ bool) error {
	truncated := in.lineLen > linePrefixCap
	if len(line) > linePrefixCap {
		line = line[:linePrefixCap]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' && !truncated {
		line = line[:n-1]
	}
	shaped := in.inspectLine(line, truncated, mayHaveZ)
	if in.windowLines == gcodeWindow {
		in.windowLines = 0
		in.windowNotGCode = 0
	}
	in.windowLines++
	if !shaped {
		if in.windowNotGCode == 0 {
			in.windowFirstAt = in.lineStart
			in.windowFirstLine = in.lineNo
		}
		in.windowNotGCode++
		if in.windowNotGCode > notGCodeBudget {
			return in.rejectAtLine(ReasonNotGCode, in.windowFirstAt, in.windowFirstLine,
				"more than "+strconv.Itoa(notGCodeBudget)+" of "+strconv.Itoa(gcodeWindow)+
					" consecutive lines are not G-code, the first at this offset")
		}
	}
	return nil
}

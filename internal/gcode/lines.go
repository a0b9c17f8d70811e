package gcode

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// inspectLine classifies one line (without "\n" and a trailing "\r") as
// G-code-shaped or not, and passes it to the motion tracker or the metadata
// parser. truncated says the line was longer than linePrefixCap and line is
// only its beginning; mayHaveZ false says it holds no 'Z' or 'z'.
func (in *Inspector) inspectLine(line []byte, truncated, mayHaveZ bool) bool {
	// Fast path: slicer output is dominated by "G1 X… Y… E…" lines.
	if len(line) >= 2 && line[0] == 'G' && isDigit(line[1]) {
		in.nonBlankSeen = true
		in.commands++
		if in.meta.thumb != nil {
			in.meta.endThumbnailEarly()
		}
		in.motion.gcode(line[1:], mayHaveZ)
		return true
	}
	t := trimBlanksLeft(line)
	if len(t) == 0 {
		return true
	}
	in.nonBlankSeen = true
	if t[0] == ';' {
		in.meta.comment(t[1:], truncated, &in.motion)
		return true
	}
	if in.meta.thumb != nil {
		in.meta.endThumbnailEarly()
	}
	// An N line number ("N120 G1 X5*23") prefixes the command Klipper runs.
	if t[0]|0x20 == 'n' && len(t) > 1 && isDigit(t[1]) {
		i := 1
		for i < len(t) && isDigit(t[i]) {
			i++
		}
		t = trimBlanksLeft(t[i:])
		if len(t) == 0 || t[0] == ';' {
			return true
		}
	}
	if len(t) >= 2 && isDigit(t[1]) {
		switch t[0] | 0x20 {
		case 'g':
			in.commands++
			in.motion.gcode(t[1:], mayHaveZ)
			return true
		case 'm':
			in.commands++
			in.motion.mcode(t[1:])
			return true
		case 't':
			in.commands++
			return true
		}
	}
	if t[0] == '%' {
		rest := trimBlanksLeft(t[1:])
		return len(rest) == 0 || rest[0] == ';'
	}
	if isExtendedCommand(t) {
		in.commands++
		return true
	}
	return false
}

// isExtendedCommand reports whether t has the shape of a Klipper extended
// command: NAME (2+ of [A-Za-z0-9_], not starting with a digit) followed only
// by KEY=VALUE parameters, where VALUE may be quoted; ';', '#' and '*' end the
// parameters like in Klipper's parser.
func isExtendedCommand(t []byte) bool {
	if !isIdentStart(t[0]) {
		return false
	}
	i := 1
	for i < len(t) && isIdentChar(t[i]) {
		i++
	}
	if i < 2 {
		return false
	}
	for {
		if i == len(t) || isParamEnd(t[i]) {
			return true
		}
		if t[i] != ' ' && t[i] != '\t' {
			return false // "Hello," or "foo(bar)": not a command name
		}
		for i < len(t) && (t[i] == ' ' || t[i] == '\t') {
			i++
		}
		if i == len(t) || isParamEnd(t[i]) {
			return true
		}
		sawEquals := false
		var quote byte
	token:
		for ; i < len(t); i++ {
			c := t[i]
			switch {
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '"' || c == '\'':
				quote = c
			case c == ' ' || c == '\t' || isParamEnd(c):
				break token
			case c == '=':
				sawEquals = true
			}
		}
		if !sawEquals {
			return false // Klipper: "Malformed command"
		}
	}
}

func isParamEnd(c byte) bool   { return c == ';' || c == '#' || c == '*' }
func isDigit(c byte) bool      { return c-'0' < 10 }
func isIdentStart(c byte) bool { return c|0x20-'a' < 26 || c == '_' }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }

func trimBlanksLeft(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// motionState follows the toolhead the way Klipper's gcode_move does (G90/G91,
// G92, M82/M83) but only for Z and E, which is all the metadata needs: the
// highest Z reached and the highest Z at which material was extruded.
type motionState struct {
	absCoord   bool // G90 (default) / G91
	absExtrude bool // M82 (default) / M83
	z, e       float64
	zKnown     bool
	moveSeen   bool

	maxZ      float64
	maxZKnown bool

	// Extrusion: an extruding move is a G0–G3 with X or Y and a positive E
	// delta. extrusionLevels counts how often the extrusion Z rose to a new
	// height: the layer count for slicers that mark no layers.
	extruded        bool
	maxExtrusionZ   float64
	extrusionLevels int

	// plainMoveIsNoop says a G1 without Z, as most lines are, changes
	// nothing above: a move was seen, E is relative, and Z is not above
	// the highest extrusion. The line scanner then skips the move.
	// plainMoveSetsE says the same with absolute E: such a G0/G1 changes
	// only e, which the line scanner leaves to resolveE.
	plainMoveIsNoop bool
	plainMoveSetsE  bool

	// The first Z set after the first layer marker: the first layer's
	// height when the slicer does not state it.
	awaitFirstLayerZ bool
	firstLayerZ      float64
	firstLayerZKnown bool
}

func (m *motionState) init() {
	m.absCoord = true
	m.absExtrude = true
}

// gcode handles a G command; s starts at the code's digits.
func (m *motionState) gcode(s []byte, mayHaveZ bool) {
	code, rest, ok := commandNumber(s)
	if !ok {
		return
	}
	switch code {
	case 0, 1, 2, 3:
		m.move(rest, mayHaveZ)
	case 90:
		m.absCoord = true
	case 91:
		m.absCoord = false
	case 92:
		m.setPosition(rest)
	default:
		return
	}
	m.updatePlainMoveIsNoop()
}

func (m *motionState) updatePlainMoveIsNoop() {
	relativeE := !m.absCoord || !m.absExtrude
	plain := m.moveSeen && !m.newLevel()
	m.plainMoveIsNoop = plain && relativeE
	m.plainMoveSetsE = plain && !relativeE
}

// resolveE applies a run of consecutive "G0 "/"G1 " lines (without Z, with
// absolute E, below a new level; "\n"-separated) that the line scanner
// skipped: their only effect is e, which the last valid E word sets.
func (m *motionState) resolveE(run []byte) {
	for len(run) > 0 {
		j := bytes.LastIndexByte(run, '\n')
		if v, ok := wordValue(run[j+1+2:], 'E'); ok {
			m.e = v
			return
		}
		if j < 0 {
			return
		}
		run = run[:j]
	}
}

// newLevel says the toolhead is above every height extruded at so far.
func (m *motionState) newLevel() bool {
	return m.zKnown && (!m.extruded || m.z > m.maxExtrusionZ)
}

// mcode handles an M command; s starts at the code's digits.
func (m *motionState) mcode(s []byte) {
	code, _, ok := commandNumber(s)
	if !ok {
		return
	}
	switch code {
	case 82:
		m.absExtrude = true
	case 83:
		m.absExtrude = false
	default:
		return
	}
	m.updatePlainMoveIsNoop()
}

// commandNumber parses the integer code of a command word. Subcodes
// (G29.1) and absurdly long numbers are not codes the tracker cares about.
func commandNumber(s []byte) (code int, rest []byte, ok bool) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		if i == 4 {
			return 0, nil, false
		}
		code = code*10 + int(s[i]-'0')
		i++
	}
	if i < len(s) && s[i] == '.' {
		return 0, nil, false
	}
	return code, s[i:], true
}

func (m *motionState) move(args []byte, mayHaveZ bool) {
	m.moveSeen = true
	if mayHaveZ {
		m.moveZ(args)
	}
	relativeE := !m.absCoord || !m.absExtrude
	newLevel := m.newLevel()
	// With relative E the E word only matters when this move could set a
	// new extrusion height (otherwise the line scanner skips plain G1 lines
	// altogether, see plainMoveIsNoop). The E position then goes stale in
	// relative mode; slicers reset it with G92 E0 before they switch back
	// to absolute E.
	if relativeE && !newLevel {
		return
	}
	v, ok := wordValue(args, 'E')
	if !ok {
		return
	}
	delta := v
	if relativeE {
		m.e += v
	} else {
		delta = v - m.e
		m.e = v
	}
	if newLevel && delta > 0 && (wordIndex(args, 'X') >= 0 || wordIndex(args, 'Y') >= 0) {
		m.extruded = true
		m.maxExtrusionZ = m.z
		m.extrusionLevels++
	}
}

// moveZ applies the move's Z word, if any.
func (m *motionState) moveZ(args []byte) {
	v, ok := wordValue(args, 'Z')
	if !ok {
		return
	}
	if m.absCoord {
		m.z = v
	} else {
		m.z += v
	}
	m.zKnown = true
	if !m.maxZKnown || m.z > m.maxZ {
		m.maxZ, m.maxZKnown = m.z, true
	}
	if m.awaitFirstLayerZ {
		m.firstLayerZ, m.firstLayerZKnown, m.awaitFirstLayerZ = m.z, true, false
	}
}

// setPosition handles G92. Like Klipper, G92 without axis words zeroes all axes.
func (m *motionState) setPosition(args []byte) {
	z, zok := wordValue(args, 'Z')
	e, eok := wordValue(args, 'E')
	if zok {
		m.z, m.zKnown = z, true
	}
	if eok {
		m.e = e
	}
	if !zok && !eok && wordIndex(args, 'X') < 0 && wordIndex(args, 'Y') < 0 {
		m.z, m.zKnown, m.e = 0, true, 0
	}
}

// wordIndex finds the parameter letter (either case) in a command's
// arguments, ignoring anything after a ';' comment. It runs on most lines of
// a file, so it looks at 8 bytes at a time: a byte equals the letter when
// (byte|0x20) XOR lower is zero, and the SWAR zero-byte test finds the first
// such byte, or the first ';', exactly (false hits only occur above a true one).
func wordIndex(args []byte, upper byte) int {
	lower := upper | 0x20
	letters := uint64(lower) * lowBits
	i := 0
	for ; i+8 <= len(args); i += 8 {
		w := binary.LittleEndian.Uint64(args[i:])
		a := (w | 0x2020202020202020) ^ letters
		b := w ^ semicolons
		if m := ((a - lowBits) &^ a) | ((b - lowBits) &^ b); m&highBits != 0 {
			j := i + bits.TrailingZeros64(m&highBits)/8
			if args[j] == ';' {
				return -1
			}
			return j
		}
	}
	for ; i < len(args); i++ {
		switch c := args[i]; {
		case c|0x20 == lower:
			return i
		case c == ';':
			return -1
		}
	}
	return -1
}

const semicolons = uint64(';') * lowBits

// wordValue parses the number after a parameter letter.
func wordValue(args []byte, upper byte) (float64, bool) {
	i := wordIndex(args, upper)
	if i < 0 {
		return 0, false
	}
	return parseDecimal(trimBlanksLeft(args[i+1:]))
}

// pow10 holds exact powers of ten for parseDecimal.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15}

// parseDecimal parses a G-code number ([+-]digits[.digits], as slicers write
// it) at the start of s, which must end there or at a separator. Exponents do
// not exist in G-code: Klipper reads "1E5" as parameters 1 and E5. The result
// is correctly rounded: with at most 15 digits both the mantissa and the power
// of ten are exact in float64. Longer numbers are refused (no slicer writes
// them), which leaves the word ignored.
func parseDecimal(s []byte) (float64, bool) {
	i := 0
	neg := false
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var mant uint64
	digits, frac := 0, 0
	seenDot := false
	for ; i < len(s); i++ {
		c := s[i]
		if isDigit(c) {
			if digits == 15 {
				return 0, false
			}
			mant = mant*10 + uint64(c-'0')
			digits++
			if seenDot {
				frac++
			}
			continue
		}
		if c == '.' && !seenDot {
			seenDot = true
			continue
		}
		break
	}
	if digits == 0 {
		return 0, false
	}
	if i < len(s) {
		c := s[i]
		if !(c == ' ' || c == '\t' || c == ';' || c == '*' || c == '\r' || isIdentStart(c)) {
			return 0, false
		}
	}
	v := float64(mant) / pow10[frac]
	if neg {
		v = -v
	}
	return v, true
}

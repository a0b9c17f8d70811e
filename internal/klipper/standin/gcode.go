package standin

import (
	"bytes"
	"strconv"
)

// motion follows what a G-code stream does to the extruder and the layer
// count, as much as print_stats reports: filament used (net extruder
// travel, with M82/M83, G90/G91 and G92 E resets) and the current layer (from
// SET_PRINT_STATS_INFO, else from the slicers' layer-change comments).
type motion struct {
	relativeE    bool // M83
	relativeAll  bool // G91: in Klipper it makes E relative too
	lastE        float64
	filamentUsed float64

	currentLayer int
	totalLayer   int
	sawStatsInfo bool // the file sets layers itself; comments are ignored
}

func (m *motion) line(raw []byte) {
	line := bytes.TrimSpace(raw)
	if len(line) == 0 {
		return
	}
	if line[0] == ';' {
		if m.sawStatsInfo {
			return
		}
		switch {
		case bytes.Equal(line, []byte(";LAYER_CHANGE")): // not ;BEFORE_/;AFTER_LAYER_CHANGE
			m.currentLayer++
		case bytes.HasPrefix(line, []byte(";LAYER:")):
			if n, err := strconv.Atoi(string(bytes.TrimSpace(line[len(";LAYER:"):]))); err == nil && n >= 0 {
				m.currentLayer = n + 1 // Cura counts from 0
			}
		}
		return
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = bytes.TrimSpace(line[:i])
	}
	fields := bytes.Fields(line)
	if len(fields) == 0 {
		return
	}
	switch cmd := string(bytes.ToUpper(fields[0])); cmd {
	case "M82":
		m.relativeE = false
	case "M83":
		m.relativeE = true
	case "G90":
		m.relativeAll = false
	case "G91":
		m.relativeAll = true
	case "G92":
		if e, ok := param(fields[1:], 'E'); ok {
			m.lastE = e
		}
	case "G0", "G1", "G2", "G3":
		e, ok := param(fields[1:], 'E')
		if !ok {
			return
		}
		if m.relativeE || m.relativeAll {
			m.filamentUsed += e
			m.lastE += e
		} else {
			m.filamentUsed += e - m.lastE
			m.lastE = e
		}
	case "SET_PRINT_STATS_INFO":
		m.sawStatsInfo = true
		for _, f := range fields[1:] {
			k, v, ok := bytes.Cut(f, []byte("="))
			if !ok {
				continue
			}
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				continue
			}
			switch string(bytes.ToUpper(k)) {
			case "CURRENT_LAYER":
				m.currentLayer = n
			case "TOTAL_LAYER":
				m.totalLayer = n
			}
		}
	}
}

// param returns the value of the word starting with letter (E12.5 → 12.5).
func param(words [][]byte, letter byte) (float64, bool) {
	for _, w := range words {
		if len(w) > 1 && (w[0] == letter || w[0] == letter+'a'-'A') {
			v, err := strconv.ParseFloat(string(w[1:]), 64)
			return v, err == nil
		}
	}
	return 0, false
}

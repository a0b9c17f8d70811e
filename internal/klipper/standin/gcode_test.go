package standin

import "testing"

func TestMotionFilamentAndLayers(t *testing.T) {
	var m motion
	for _, l := range []string{
		"M82 ; absolute E",
		"G92 E0",
		"G1 X10 E5.5",
		"G1 X20 E4.5 ; retract 1 mm",
		"G1 X20 E5.5",
		"G92 E0 ; reset",
		"G1 E2",
		";BEFORE_LAYER_CHANGE",
		";LAYER_CHANGE",
		";AFTER_LAYER_CHANGE",
		"M83",
		"G1 X1 E0.25",
		"g1 x2 e0.25",
		"G1 X3 ; no extrusion",
		";LAYER_CHANGE",
		"M82",
		"G91 ; relative moves make E relative too",
		"G1 E-2",
		"G90",
		"G1 E1.5 ; absolute again, from the position after the relative move",
	} {
		m.line([]byte(l + "\n"))
	}
	if want := 5.5 - 1 + 1 + 2 + 0.5 - 2 + 1; m.filamentUsed != want {
		t.Errorf("filament used %v, want %v", m.filamentUsed, want)
	}
	if m.currentLayer != 2 {
		t.Errorf("layer %d, want 2 (only exact ;LAYER_CHANGE lines count)", m.currentLayer)
	}

	var cura motion
	for _, l := range []string{";LAYER:0", "G1 E1", ";LAYER:1", ";LAYER:junk"} {
		cura.line([]byte(l))
	}
	if cura.currentLayer != 2 {
		t.Errorf("Cura layer %d, want 2", cura.currentLayer)
	}

	var native motion
	for _, l := range []string{"SET_PRINT_STATS_INFO TOTAL_LAYER=50", ";LAYER_CHANGE", "SET_PRINT_STATS_INFO CURRENT_LAYER=7"} {
		native.line([]byte(l))
	}
	if native.currentLayer != 7 || native.totalLayer != 50 {
		t.Errorf("SET_PRINT_STATS_INFO: layer %d/%d, want 7/50", native.currentLayer, native.totalLayer)
	}
}

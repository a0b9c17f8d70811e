package democube

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
)

// TestCubePassesTheGate feeds the cube to the same inspector lmntd runs on
// every job and checks the metadata a slicer's file would carry.
func TestCubePassesTheGate(t *testing.T) {
	src := Generate()
	if !bytes.Equal(src, Generate()) {
		t.Fatal("Generate is not deterministic")
	}
	in := gcode.NewInspector(gcode.Options{})
	if _, err := in.Write(src); err != nil {
		t.Fatalf("gate rejected the cube: %v", err)
	}
	m, err := in.Finish()
	if err != nil {
		t.Fatalf("gate rejected the cube: %v", err)
	}
	if m.SlicerName != "lmnt democube" || m.SlicerVersion != "1.0" {
		t.Errorf("slicer %q %q", m.SlicerName, m.SlicerVersion)
	}
	if m.LayerCount != 100 || m.LayerHeight != 0.2 || m.FirstLayerHeight != 0.2 || m.ObjectHeight != 20 {
		t.Errorf("layers %d, height %g/%g, object %g; want 100, 0.2/0.2, 20", m.LayerCount, m.LayerHeight, m.FirstLayerHeight, m.ObjectHeight)
	}
	if m.NozzleDiameter != 0.4 || m.FilamentType != "PLA" {
		t.Errorf("nozzle %g, filament %q", m.NozzleDiameter, m.FilamentType)
	}
	// A 20 mm cube at 20 % infill takes a few metres of filament and
	// several minutes; the estimate must be of that order, not zero.
	if m.FilamentUsedMM < 1000 || m.FilamentUsedMM > 10000 || m.FilamentUsedG < 2 || m.EstimatedTime < 300 || m.EstimatedTime > 7200 {
		t.Errorf("filament %.0f mm / %.1f g, time %.0f s", m.FilamentUsedMM, m.FilamentUsedG, m.EstimatedTime)
	}
	if m.MaxZ != 25 {
		t.Errorf("max Z %g, want 25 (20 mm cube and the 5 mm end lift)", m.MaxZ)
	}
	if len(m.Thumbnails) != 2 {
		t.Fatalf("%d thumbnails, want 2", len(m.Thumbnails))
	}
	for i, px := range []int{32, 300} {
		th := m.Thumbnails[i]
		img, err := png.Decode(bytes.NewReader(th.Data))
		if err != nil {
			t.Fatalf("thumbnail %d: %v", i, err)
		}
		if b := img.Bounds(); th.Width != px || b.Dx() != px || b.Dy() != px {
			t.Errorf("thumbnail %d: %dx%d, image %v", i, th.Width, th.Height, b)
		}
		// The cube covers the centre; the corners are transparent.
		if _, _, _, a := img.At(px/2, px/2).RGBA(); a == 0 {
			t.Errorf("thumbnail %d: centre is transparent", i)
		}
		if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
			t.Errorf("thumbnail %d: corner is not transparent", i)
		}
		if dir := os.Getenv("DEMOCUBE_THUMBNAIL_DIR"); dir != "" {
			_ = os.WriteFile(filepath.Join(dir, "thumb.png"), th.Data, 0o644)
		}
	}
	t.Logf("%d bytes, %d layers, %.0f mm of filament, %.0f s", len(src), m.LayerCount, m.FilamentUsedMM, m.EstimatedTime)
}

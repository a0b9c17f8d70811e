package mdstub

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// The fields the stub must carry to Mainsail and Fluidd (issue 18).
var carried = []string{"slicer", "slicer_version", "estimated_time", "filament_total", "filament_weight_total",
	"layer_count", "layer_height", "first_layer_height", "object_height", "nozzle_diameter",
	"filament_type", "filament_name", "first_layer_extr_temp", "first_layer_bed_temp", "thumbnails"}

func TestStubYieldsMoonrakersMetadataForEveryFixture(t *testing.T) {
	for _, fx := range testutil.Fixtures(t) {
		t.Run(fx.Name, func(t *testing.T) {
			full := fx.Bytes(t)
			stub, err := Build(bytes.NewReader(full), int64(len(full)))
			if err != nil {
				t.Fatal(err)
			}
			want := mrMetadata(mrFromFile(full))
			got := mrMetadata(mrFromFile(stub.Data))
			for _, k := range carried {
				if !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("%s: stub gives %v, the full file %v", k, got[k], want[k])
				}
			}
			checkModelAgainstSidecar(t, fx.ExpectPath, want)
			if s := mrGcodeStartByte(mrFromFile(stub.Data)); s != nil {
				t.Errorf("Moonraker finds G-code in the stub at byte %v", s)
			}
			assertNoGcode(t, full, stub.Data)
			if len(stub.Data) > 64*1024 && len(want["thumbnails"].([]string)) == 0 {
				t.Errorf("stub of %d bytes without thumbnails", len(stub.Data))
			}
			t.Logf("%s: %d bytes of %d (%s), %d metadata fields", fx.Name, len(stub.Data), len(full), stub.Slicer, len(want))
		})
	}
}

// checkModelAgainstSidecar keeps the Moonraker model honest: where the
// fixture's sidecar states what the slicer wrote, the model reads the same.
func checkModelAgainstSidecar(t *testing.T, path string, md map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var side struct {
		Slicer  string `json:"slicer"`
		Summary map[string]struct {
			Value any `json:"value"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(raw, &side); err != nil {
		t.Fatal(err)
	}
	expect := func(field, key string) {
		v := side.Summary[key].Value
		if v == nil {
			return
		}
		if f, ok := v.(float64); ok {
			got, ok := md[field].(float64)
			if n, isInt := md[field].(int); isInt {
				got, ok = float64(n), true
			}
			if !ok || got != f {
				t.Errorf("model %s = %v, sidecar %s = %v", field, md[field], key, f)
			}
		}
	}
	if side.Slicer == "prusaslicer" {
		expect("estimated_time", "estimated_time_s")
		expect("filament_total", "filament_used_mm")
		expect("layer_height", "layer_height")
		expect("first_layer_height", "first_layer_height")
		expect("object_height", "object_height")
		expect("nozzle_diameter", "nozzle_diameter")
		if md["filament_type"] != side.Summary["filament_type"].Value {
			t.Errorf("model filament_type %v", md["filament_type"])
		}
	}
	if side.Slicer == "cura" {
		expect("layer_count", "layer_count")
		expect("layer_height", "layer_height")
		expect("estimated_time", "estimated_time_s")
	}
	var want []string
	if th, ok := side.Summary["thumbnails"].Value.([]any); ok {
		for _, x := range th {
			want = append(want, x.(string))
		}
	}
	var got []string
	if th, ok := md["thumbnails"].([]string); ok {
		for _, x := range th {
			got = append(got, strings.SplitN(x, ":", 2)[0])
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("model thumbnails %v, sidecar %v", got, want)
	}
}

// assertNoGcode: besides the guard line, every stub line is a comment, no
// G-code line of the job is in it, and no slicer config block either.
func assertNoGcode(t *testing.T, full, stub []byte) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(stub), "\n"), "\n")
	if !strings.HasPrefix(lines[0], GuardCommand+" ") {
		t.Fatalf("first line %q is not the guard", lines[0])
	}
	inStub := map[string]bool{}
	settings := 0
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, ";") {
			t.Errorf("stub line %q is not a comment", l)
		}
		inStub[strings.TrimSpace(l)] = true
		if strings.Contains(l, " = ") {
			settings++
		}
		for _, marker := range []string{"_config = begin", "_config = end", "; start_gcode =", "; end_gcode ="} {
			if strings.Contains(l, marker) {
				t.Errorf("stub carries config block line %q", l)
			}
		}
	}
	if settings > len(prusaProbes) {
		t.Errorf("stub carries %d settings lines, more than Moonraker reads", settings)
	}
	for _, l := range strings.Split(string(full), "\n") {
		code, _, _ := strings.Cut(l, ";")
		if code = strings.TrimSpace(code); code != "" && inStub[strings.TrimSpace(l)] {
			t.Fatalf("G-code line %q of the job is in the stub", l)
		}
	}
}

func TestUnknownSlicerGetsNoStub(t *testing.T) {
	data := []byte("G28\nG1 Z0.2 F300\nG1 X10 E1\n")
	if _, err := Build(bytes.NewReader(data), int64(len(data))); err != ErrUnknownSlicer {
		t.Fatalf("err = %v, want ErrUnknownSlicer", err)
	}
}

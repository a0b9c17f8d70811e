package gcode_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// sidecar is the part of NAME.expect.json the tests use: the fixtures'
// gcode-fixture-expect/1 and the synthetic headers' gcode-synthetic-expect/1
// share it.
type sidecar struct {
	Summary map[string]struct {
		Value json.RawMessage `json:"value"`
		From  string          `json:"from"`
		Note  string          `json:"note"`
	} `json:"summary"`
	Fields map[string]struct {
		Value json.RawMessage `json:"value"`
	} `json:"fields"`
	Thumbnails []struct {
		Width         int    `json:"width"`
		Height        int    `json:"height"`
		Format        string `json:"format"`
		DecodedSHA256 string `json:"decoded_sha256"`
	} `json:"thumbnails"`
}

func readSidecar(t testing.TB, path string) sidecar {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sc sidecar
	if err := json.Unmarshal(raw, &sc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(sc.Summary) == 0 {
		t.Fatalf("%s: no summary", path)
	}
	return sc
}

// inspect streams data through a fresh inspector in chunks of the given
// sizes (cycled), then finishes.
func inspect(data []byte, opts gcode.Options, chunk func() int) (*gcode.Metadata, error) {
	in := gcode.NewInspector(opts)
	for p := data; len(p) > 0; {
		n := min(chunk(), len(p))
		if _, err := in.Write(p[:n]); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	return in.Finish()
}

func fixed(n int) func() int { return func() int { return n } }

// checkSidecar compares every summary value with the metadata: a null value
// means the field must be absent (zero).
func checkSidecar(t *testing.T, md *gcode.Metadata, sc sidecar) {
	t.Helper()
	for key, e := range sc.Summary {
		want := e.Value
		// CuraEngine's CLI writes placeholders into its header; the sidecar
		// reports them as the file's value with a note. The inspector must
		// report the real value (the time: the last ;TIME_ELAPSED:) or none.
		if strings.HasPrefix(e.From, "fields.") && strings.Contains(e.Note, "placeholder") {
			want = json.RawMessage("null")
			if key == "estimated_time_s" {
				f, ok := sc.Fields["last_time_elapsed"]
				if !ok {
					t.Fatalf("placeholder time but no fields.last_time_elapsed")
				}
				want = f.Value
			}
		}
		switch key {
		case "slicer_name":
			checkString(t, key, md.SlicerName, want)
		case "slicer_version":
			checkString(t, key, md.SlicerVersion, want)
		case "filament_type":
			checkString(t, key, md.FilamentType, want)
		case "estimated_time_s":
			checkNumber(t, key, md.EstimatedTime, want, 0.5)
		case "estimated_time_text":
			var text *string
			mustUnmarshal(t, want, &text)
			if text == nil {
				checkNumber(t, key, md.EstimatedTime, want, 0)
				break
			}
			checkNumber(t, key, md.EstimatedTime, json.RawMessage(strconv.Itoa(durationText(t, *text))), 0)
		case "filament_used_mm":
			checkNumber(t, key, md.FilamentUsedMM, want, 1e-6)
		case "filament_used_m":
			checkNumber(t, key, md.FilamentUsedMM/1000, want, 1e-9)
		case "filament_used_g":
			checkNumber(t, key, md.FilamentUsedG, want, 1e-6)
		case "layer_count":
			checkNumber(t, key, float64(md.LayerCount), want, 0)
		case "layer_height":
			checkNumber(t, key, md.LayerHeight, want, 1e-9)
		case "first_layer_height":
			checkNumber(t, key, md.FirstLayerHeight, want, 1e-9)
		case "object_height":
			checkNumber(t, key, md.ObjectHeight, want, 1e-9)
		case "nozzle_diameter":
			checkNumber(t, key, md.NozzleDiameter, want, 1e-9)
		case "max_z":
			checkNumber(t, key, md.MaxZ, want, 1e-9)
		case "extents":
			var ext *gcode.Extents
			mustUnmarshal(t, want, &ext)
			if !reflect.DeepEqual(md.Extents, ext) {
				t.Errorf("extents = %+v, want %+v", md.Extents, ext)
			}
		case "thumbnails":
			var sizes []string
			mustUnmarshal(t, want, &sizes)
			var got []string
			for _, th := range md.Thumbnails {
				got = append(got, strconv.Itoa(th.Width)+"x"+strconv.Itoa(th.Height))
			}
			if strings.Join(got, ",") != strings.Join(sizes, ",") {
				t.Errorf("thumbnails = %v, want %v", got, sizes)
			}
		default:
			t.Errorf("summary key %q has no Metadata counterpart in this test", key)
		}
	}
	if len(md.Thumbnails) != len(sc.Thumbnails) {
		t.Fatalf("%d thumbnails, sidecar lists %d", len(md.Thumbnails), len(sc.Thumbnails))
	}
	for i, want := range sc.Thumbnails {
		got := md.Thumbnails[i]
		sum := sha256.Sum256(got.Data)
		if got.Width != want.Width || got.Height != want.Height || string(got.Format) != want.Format ||
			hex.EncodeToString(sum[:]) != want.DecodedSHA256 {
			t.Errorf("thumbnail %d: %dx%d %s sha256 %x, want %dx%d %s %s", i, got.Width, got.Height,
				got.Format, sum, want.Width, want.Height, want.Format, want.DecodedSHA256)
		}
		checkImageHeader(t, got)
	}
	if md.ThumbnailsSkipped != 0 {
		t.Errorf("%d thumbnails skipped", md.ThumbnailsSkipped)
	}
}

// checkImageHeader decodes the image's header with an independent decoder
// (the standard library for PNG and JPEG; the QOI header by its spec).
func checkImageHeader(t *testing.T, th gcode.Thumbnail) {
	t.Helper()
	var w, h int
	switch th.Format {
	case gcode.FormatPNG:
		cfg, err := png.DecodeConfig(bytes.NewReader(th.Data))
		if err != nil {
			t.Fatalf("PNG thumbnail: %v", err)
		}
		w, h = cfg.Width, cfg.Height
	case gcode.FormatJPG:
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(th.Data))
		if err != nil {
			t.Fatalf("JPG thumbnail: %v", err)
		}
		w, h = cfg.Width, cfg.Height
	case gcode.FormatQOI:
		if len(th.Data) < 22 || string(th.Data[:4]) != "qoif" ||
			!bytes.Equal(th.Data[len(th.Data)-8:], []byte{0, 0, 0, 0, 0, 0, 0, 1}) {
			t.Fatalf("QOI thumbnail: bad header or end marker")
		}
		w, h = int(binary.BigEndian.Uint32(th.Data[4:])), int(binary.BigEndian.Uint32(th.Data[8:]))
	default:
		t.Fatalf("unknown thumbnail format %q", th.Format)
	}
	if w != th.Width || h != th.Height {
		t.Errorf("%s thumbnail decodes as %dx%d, declared %dx%d", th.Format, w, h, th.Width, th.Height)
	}
}

func mustUnmarshal(t testing.TB, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("sidecar value %s: %v", raw, err)
	}
}

func checkString(t *testing.T, key, got string, want json.RawMessage) {
	t.Helper()
	var w *string
	mustUnmarshal(t, want, &w)
	if w == nil && got != "" || w != nil && got != *w {
		t.Errorf("%s = %q, want %s", key, got, want)
	}
}

func checkNumber(t *testing.T, key string, got float64, want json.RawMessage, tol float64) {
	t.Helper()
	var w *float64
	mustUnmarshal(t, want, &w)
	if w == nil {
		if got != 0 {
			t.Errorf("%s = %v, want absent", key, got)
		}
		return
	}
	if math.Abs(got-*w) > tol {
		t.Errorf("%s = %v, want %v", key, got, *w)
	}
}

// durationText reads the sidecar's "7h 25m 15s".
func durationText(t *testing.T, s string) int {
	t.Helper()
	total := 0
	for _, part := range strings.Fields(s) {
		n, err := strconv.Atoi(part[:len(part)-1])
		if err != nil {
			t.Fatalf("time text %q: %v", s, err)
		}
		total += n * map[byte]int{'d': 86400, 'h': 3600, 'm': 60, 's': 1}[part[len(part)-1]]
	}
	return total
}

// TestFixtures: every real slicer file passes the gate and yields its
// sidecar's summary and thumbnails.
func TestFixtures(t *testing.T) {
	for _, f := range testutil.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			sc := readSidecar(t, f.ExpectPath)
			in := gcode.NewInspector(gcode.Options{})
			r := f.Open(t)
			defer r.Close()
			if _, err := io.CopyBuffer(in, r, make([]byte, 32<<10)); err != nil {
				t.Fatal(err)
			}
			md, err := in.Finish()
			if err != nil {
				t.Fatal(err)
			}
			checkSidecar(t, md, sc)
		})
	}
}

type synthetic struct {
	name string
	data []byte
	sc   sidecar
}

func synthetics(t testing.TB) []synthetic {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.gcode")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no synthetic headers in testdata: %v", err)
	}
	var out []synthetic
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		base := strings.TrimSuffix(p, ".gcode")
		out = append(out, synthetic{filepath.Base(base), data, readSidecar(t, base+".expect.json")})
	}
	return out
}

// TestSyntheticHeaders covers the slicers without a real fixture, each in its
// own header dialect (OrcaSlicer, Bambu Studio, SuperSlicer, Cura GUI,
// Simplify3D, ideaMaker) and the QOI and JPG thumbnail formats.
func TestSyntheticHeaders(t *testing.T) {
	for _, s := range synthetics(t) {
		t.Run(s.name, func(t *testing.T) {
			md, err := inspect(s.data, gcode.Options{}, fixed(len(s.data)))
			if err != nil {
				t.Fatal(err)
			}
			checkSidecar(t, md, s.sc)
		})
	}
}

// TestChunkingInvariance: the verdict and the metadata do not depend on how
// the stream is cut into writes.
func TestChunkingInvariance(t *testing.T) {
	type input struct {
		name string
		data []byte
	}
	var inputs []input
	smallest := -1
	for _, f := range testutil.Fixtures(t) {
		inputs = append(inputs, input{f.Name, f.Bytes(t)})
		if smallest < 0 || len(inputs[len(inputs)-1].data) < len(inputs[smallest].data) {
			smallest = len(inputs) - 1
		}
	}
	for _, s := range synthetics(t) {
		inputs = append(inputs, input{s.name, s.data})
	}
	rng := rand.New(rand.NewPCG(2, 7))
	for i, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			want, err := inspect(in.data, gcode.Options{}, fixed(len(in.data)))
			if err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				got, err := inspect(in.data, gcode.Options{}, func() int { return 1 + rng.IntN(1<<(4+4*round)) })
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("random chunks (round %d): %v\n got %+v\nwant %+v", round, err, got, want)
				}
			}
			if i == smallest || len(in.data) < 4096 {
				got, err := inspect(in.data, gcode.Options{}, fixed(1))
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("1-byte writes: %v\n got %+v\nwant %+v", err, got, want)
				}
			}
		})
	}
}

// TestCRLF: a file with Windows line ends passes with the same metadata.
func TestCRLF(t *testing.T) {
	for _, f := range testutil.Fixtures(t) {
		if !strings.HasPrefix(f.Name, "prusaslicer_cube") {
			continue
		}
		lf := f.Bytes(t)
		want, err := inspect(lf, gcode.Options{}, fixed(32<<10))
		if err != nil {
			t.Fatal(err)
		}
		crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
		got, err := inspect(crlf, gcode.Options{}, fixed(32<<10))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("CRLF metadata differs:\n got %+v\nwant %+v", got, want)
		}
		return
	}
	t.Fatal("PrusaSlicer cube fixture not found")
}

// TestThumbnailLimits: caps and damaged blocks drop thumbnails, never the file.
func TestThumbnailLimits(t *testing.T) {
	var cube []byte
	for _, f := range testutil.Fixtures(t) {
		if strings.HasPrefix(f.Name, "prusaslicer_cube") {
			cube = f.Bytes(t)
		}
	}
	if cube == nil {
		t.Fatal("PrusaSlicer cube fixture not found")
	}
	cases := []struct {
		name    string
		data    []byte
		opts    gcode.Options
		kept    []string
		skipped int
	}{
		{"per-thumbnail cap", cube, gcode.Options{MaxThumbnailBytes: 1000}, []string{"32x32"}, 1},
		{"total cap", cube, gcode.Options{MaxThumbnailTotal: 2000}, []string{"32x32"}, 1},
		{"count cap", cube, gcode.Options{MaxThumbnails: 1}, []string{"32x32"}, 1},
		{"bad base64", bytes.Replace(cube, []byte("; iVBORw0KGgo"), []byte("; iVBORw0K!go"), 1), gcode.Options{}, []string{"400x300"}, 1},
		{"size lies", bytes.Replace(cube, []byte("thumbnail begin 32x32"), []byte("thumbnail begin 32x33"), 1), gcode.Options{}, []string{"400x300"}, 1},
		{"length lies", bytes.Replace(cube, []byte("thumbnail begin 32x32 1000"), []byte("thumbnail begin 32x32 1004"), 1), gcode.Options{}, []string{"400x300"}, 1},
		{"not a JPEG", bytes.Replace(bytes.Replace(cube, []byte("thumbnail begin 32x32"), []byte("thumbnail_JPG begin 32x32"), 1),
			[]byte("; thumbnail end"), []byte("; thumbnail_JPG end"), 1), gcode.Options{}, []string{"400x300"}, 1},
		{"interrupted", append([]byte("; thumbnail begin 2x2 8\n; iVBORw0K\nG28\nG1 X1\nG1 Y1\n"), cube...), gcode.Options{}, []string{"32x32", "400x300"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			md, err := inspect(c.data, c.opts, fixed(32<<10))
			if err != nil {
				t.Fatal(err)
			}
			var kept []string
			for _, th := range md.Thumbnails {
				kept = append(kept, strconv.Itoa(th.Width)+"x"+strconv.Itoa(th.Height))
			}
			if !reflect.DeepEqual(kept, c.kept) || md.ThumbnailsSkipped != c.skipped {
				t.Fatalf("kept %v skipped %d, want %v and %d", kept, md.ThumbnailsSkipped, c.kept, c.skipped)
			}
		})
	}
}

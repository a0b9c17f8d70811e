package gcode_test

import (
	"bytes"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// benchChunk is the Write size of the decrypt pipeline (and of io.Copy).
const benchChunk = 32 << 10

// largestFixture returns the 30 MB PrusaSlicer file, decompressed once.
func largestFixture(b *testing.B) []byte {
	b.Helper()
	var data []byte
	for _, f := range testutil.Fixtures(b) {
		if f.Name == "prusaslicer_knurled_vase_30mb" {
			data = f.Bytes(b)
		}
	}
	if len(data) < 30<<20-2<<20 {
		b.Fatalf("30 MB fixture missing or short (%d bytes)", len(data))
	}
	return data
}

// inspectChunked runs one inspector over data in pipeline-sized writes
// (metadata_test.go's inspect).
func inspectChunked(b *testing.B, data []byte) {
	if _, err := inspect(data, gcode.Options{}, fixed(benchChunk)); err != nil {
		b.Fatal(err)
	}
}

// benchFile is the 101 MB absolute-extrusion PrusaSlicer file of
// shared/bench.
func benchFile(b *testing.B) testutil.Fixture {
	return testutil.Fixture{Name: "prusaslicer_vase_absolute_e_100mb",
		Path: filepath.Join(testutil.SharedDir(b), "bench", "prusaslicer_vase_absolute_e_100mb.gcode.gz")}
}

// BenchmarkInspector measures the gate and metadata extraction over the 30 MB
// fixture in pipeline-sized writes. Compare it with BenchmarkUTF8Valid, the
// floor any UTF-8 gate has to pay, from the same run.
func BenchmarkInspector(b *testing.B) {
	data := largestFixture(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		inspectChunked(b, data)
	}
}

// BenchmarkUTF8Valid is the reference: the standard library's UTF-8 check
// alone over the same bytes and chunks.
func BenchmarkUTF8Valid(b *testing.B) {
	data := largestFixture(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for p := data; len(p) > 0; {
			n := min(benchChunk, len(p))
			if !utf8.Valid(p[:n]) {
				b.Fatal("fixture is not UTF-8")
			}
			p = p[n:]
		}
	}
}

// BenchmarkInspectorFixtures runs every fixture and the 101 MB
// absolute-extrusion PrusaSlicer file of shared/bench. Absolute extrusion
// (M82: PrusaSlicer's and Cura's default, here the bench file and the Cura
// fixture) and spiral vases (a Z word on every line) take other paths than
// the relative-extrusion (M83) PrusaSlicer fixtures.
func BenchmarkInspectorFixtures(b *testing.B) {
	for _, f := range append(testutil.Fixtures(b), benchFile(b)) {
		data := f.Bytes(b)
		b.Run(f.Name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				inspectChunked(b, data)
			}
		})
	}
}

// BenchmarkInspectorComments isolates the metadata pass over comments: only
// the comment lines of every fixture and of the 101 MB bench file, where the
// slicer dialects' rules are matched.
func BenchmarkInspectorComments(b *testing.B) {
	var comments []byte
	for _, f := range append(testutil.Fixtures(b), benchFile(b)) {
		for line := range bytes.Lines(f.Bytes(b)) {
			if bytes.HasPrefix(bytes.TrimLeft(line, " \t"), []byte(";")) {
				comments = append(comments, line...)
			}
		}
	}
	comments = append(comments, "G28\nM104 S200\nG1 X1\n"...) // the gate's minimum of commands
	b.SetBytes(int64(len(comments)))
	for b.Loop() {
		inspectChunked(b, comments)
	}
}

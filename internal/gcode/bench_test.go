package gcode_test

import (
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

// BenchmarkInspector measures the gate and metadata extraction over the 30 MB
// fixture in pipeline-sized writes. Compare it with BenchmarkUTF8Valid, the
// floor any UTF-8 gate has to pay, from the same run.
func BenchmarkInspector(b *testing.B) {
	data := largestFixture(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		in := gcode.NewInspector(gcode.Options{})
		for p := data; len(p) > 0; {
			n := min(benchChunk, len(p))
			if _, err := in.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if _, err := in.Finish(); err != nil {
			b.Fatal(err)
		}
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

// BenchmarkInspectorFixtures runs every fixture: absolute-E Cura files and
// spiral vases (a Z word on every line) take the slower paths.
func BenchmarkInspectorFixtures(b *testing.B) {
	for _, f := range testutil.Fixtures(b) {
		data := f.Bytes(b)
		b.Run(f.Name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				in := gcode.NewInspector(gcode.Options{})
				for p := data; len(p) > 0; {
					n := min(benchChunk, len(p))
					if _, err := in.Write(p[:n]); err != nil {
						b.Fatal(err)
					}
					p = p[n:]
				}
				if _, err := in.Finish(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

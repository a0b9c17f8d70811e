// Package testutil is the tests' shared toolkit: the shared slicer fixtures,
// the crypto vectors, waiting on a condition (Eventually), sealed memfds,
// files in a temporary tree and Prometheus scrapes. Tests use these rather
// than hand-written copies.
package testutil

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// SharedDir is the project's shared/ directory: $LMNTD_SHARED, else
// ../shared beside the repository. A missing directory fails the test: the
// fixtures are part of the test suite, not optional.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("LMNTD_SHARED")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "fixtures")); err != nil {
		t.Fatalf("shared fixtures not found (set LMNTD_SHARED): %v", err)
	}
	return dir
}

// Fixture is one slicer G-code file from shared/fixtures.
type Fixture struct {
	Name       string // base name without .gcode / .gcode.gz
	Path       string // the file as stored (maybe gzip-compressed)
	ExpectPath string // NAME.expect.json
}

// Fixtures lists every G-code fixture with its sidecar.
func Fixtures(t testing.TB) []Fixture {
	t.Helper()
	dir := filepath.Join(SharedDir(t), "fixtures")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []Fixture
	for _, e := range entries {
		n := e.Name()
		base, ok := strings.CutSuffix(n, ".gcode")
		if !ok {
			base, ok = strings.CutSuffix(n, ".gcode.gz")
		}
		if !ok {
			continue
		}
		out = append(out, Fixture{Name: base, Path: filepath.Join(dir, n), ExpectPath: filepath.Join(dir, base+".expect.json")})
	}
	if len(out) == 0 {
		t.Fatalf("no G-code fixtures in %s", dir)
	}
	return out
}

// Open returns the fixture's uncompressed G-code as a stream.
func (f Fixture) Open(t testing.TB) io.ReadCloser {
	t.Helper()
	file, err := os.Open(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(f.Path, ".gz") {
		return file
	}
	zr, err := gzip.NewReader(file)
	if err != nil {
		t.Fatal(err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, file}
}

// Bytes returns the fixture's whole uncompressed G-code.
func (f Fixture) Bytes(t testing.TB) []byte {
	t.Helper()
	r := f.Open(t)
	defer r.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatalf("%s: %v", f.Name, err)
	}
	return buf.Bytes()
}

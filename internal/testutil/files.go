package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// WriteFile writes content to dir/name (making dir's missing parents) and
// returns the file's path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// SealedMemfd is a sealed memfd holding content, closed when the test ends.
func SealedMemfd(t testing.TB, content []byte) *memfd.File {
	t.Helper()
	f := SealedMemfdOwned(t, content)
	t.Cleanup(func() { f.Close() })
	return f
}

// SealedMemfdOwned is a sealed memfd holding content whose ownership passes
// to the code under test (which must close it).
func SealedMemfdOwned(t testing.TB, content []byte) *memfd.File {
	t.Helper()
	f, err := memfd.Create("job")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return f
}

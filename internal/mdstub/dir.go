package mdstub

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// Folder is the stubs' folder under Klipper's gcodes directory. Hidden, so
// Mainsail's and Fluidd's file lists leave it out by default (nobody should
// try to print a stub); Moonraker indexes hidden folders like any other.
const Folder = ".lmnt"

// Ext is the stubs' extension: one of Moonraker's VALID_GCODE_EXTS, so its
// extractor reads them.
const Ext = ".gcode"

// maxTitleRunes bounds the title part of a stub's name; Mainsail shows
// about this much before it elides.
const maxTitleRunes = 80

// Dir manages the stubs in <gcodes>/.lmnt. Every file there with the stub
// extension is lmntd's: `lmnt setup` creates the folder for lmntd alone.
type Dir struct {
	Gcodes string // Klipper's [virtual_sdcard] path
}

// Path is the stub folder's host path.
func (d Dir) Path() string { return filepath.Join(d.Gcodes, Folder) }

// Reserve picks the print_stats file name (relative to the gcodes
// directory) of a stub for a job titled title, distinct from every stub
// present and from the names in busy (stubs being written).
func (d Dir) Reserve(title string, busy map[string]bool) (string, error) {
	entries, err := os.ReadDir(d.Path())
	if err != nil {
		return "", fmt.Errorf("mdstub: the stub folder: %w", err)
	}
	taken := map[string]bool{}
	for _, e := range entries {
		taken[strings.ToLower(e.Name())] = true
	}
	for n := range busy {
		taken[strings.ToLower(filepath.Base(n))] = true
	}
	base := SanitizeTitle(title)
	for i := 1; ; i++ {
		name := base + Ext
		if i > 1 {
			name = fmt.Sprintf("%s (%d)%s", base, i, Ext)
		}
		// Case-insensitively distinct: virtual_sdcard and Moonraker both
		// match names without case in places.
		if !taken[strings.ToLower(name)] {
			return Folder + "/" + name, nil
		}
	}
}

// Write stores a stub under the name Reserve gave. It appears at once and
// whole (rename), readable by Moonraker (mode 0644; the folder's default
// ACL gives Klipper's user the rest).
func (d Dir) Write(rel string, data []byte) error {
	path, err := d.hostPath(rel)
	if err != nil {
		return err
	}
	// The temporary name (.<name>.tmp-…) neither ends in .gcode nor is
	// visible: Moonraker ignores it.
	if err := atomicfile.WriteWith(path, data, atomicfile.Mode(0o644)); err != nil {
		return fmt.Errorf("mdstub: writing %s: %w", rel, err)
	}
	return nil
}

// Remove deletes a stub; a stub already gone is no error.
func (d Dir) Remove(rel string) error {
	path, err := d.hostPath(rel)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mdstub: %w", err)
	}
	return nil
}

// Clean removes every stub (and temporary file) except those named in
// keep, and returns what it removed: the leftovers of a run that ended
// without removing them (a crash, a power cut).
func (d Dir) Clean(keep map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(d.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mdstub: the stub folder: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		n := e.Name()
		stub := strings.HasSuffix(n, Ext) && !strings.HasPrefix(n, ".")
		// atomicfile's temporaries, and those of versions before it wrote stubs.
		temp := atomicfile.IsTemp(n) || strings.HasPrefix(n, ".stub-") && strings.HasSuffix(n, ".tmp")
		if !e.Type().IsRegular() || !stub && !temp || keep[Folder+"/"+n] {
			continue // Moonraker's .thumbs, or a stub still in use
		}
		if err := os.Remove(filepath.Join(d.Path(), n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, Folder+"/"+n)
	}
	return removed, errors.Join(errs...)
}

// IsStub tells whether a print_stats file name is a stub's.
func IsStub(name string) bool {
	dir, file, ok := strings.Cut(name, "/")
	return ok && dir == Folder && file != "" && !strings.Contains(file, "/") && strings.HasSuffix(file, Ext)
}

func (d Dir) hostPath(rel string) (string, error) {
	if !IsStub(rel) || strings.HasPrefix(filepath.Base(rel), ".") {
		return "", fmt.Errorf("mdstub: %q is not a stub name", rel)
	}
	return filepath.Join(d.Gcodes, rel), nil
}

// SanitizeTitle turns a job title into a file name part that Klipper,
// Moonraker, Mainsail and every file system take as it is: letters (any
// script), digits, space and . _ - ( ) + , only; other characters become a
// space, runs of spaces one; no leading dot; at most 80 characters. An
// empty result becomes "LMNT job".
func SanitizeTitle(title string) string {
	var b strings.Builder
	space := false
	n := 0
	for _, r := range title {
		ok := unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._-()+,", r)
		if !ok || r == utf8.RuneError {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			n++
			space = false
		}
		if n >= maxTitleRunes {
			break
		}
		b.WriteRune(r)
		n++
	}
	s := strings.TrimLeft(b.String(), ". ")
	s = strings.TrimSuffix(s, Ext)
	s = strings.TrimSpace(s)
	if s == "" {
		return "LMNT job"
	}
	return s
}

package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
)

// fileError is a problem with the file given to lmnt print: the owner's to
// fix, so it says what the file is and what to do, never "cannot reach
// lmntd".
type fileError struct{ msg string }

func (e *fileError) Error() string { return e.msg }

func fileErrorf(format string, args ...any) error { return &fileError{fmt.Sprintf(format, args...)} }

// openPrintFile opens the file lmnt print was given and, when it is plain
// G-code (no key given), runs the same gate lmntd runs on every job, so a
// picture, a text or a compressed file is refused at once instead of being
// queued and failed later. The owner's own file: the error may say which
// line is wrong.
func openPrintFile(path string, encrypted bool) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fileErrorf("%s: no such file", path)
		case errors.Is(err, os.ErrPermission):
			return nil, fileErrorf("%s: permission denied (lmnt reads the file as you)", path)
		}
		return nil, fileErrorf("cannot read %s: %v", path, plainErr(err))
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		f.Close()
		return nil, fileErrorf("cannot read %s: %v", path, plainErr(err))
	case fi.IsDir():
		f.Close()
		return nil, fileErrorf("%s is a directory: give the G-code file to print", path)
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fileErrorf("%s is not a regular file", path)
	case fi.Size() == 0:
		f.Close()
		return nil, fileErrorf("%s is empty", path)
	}
	if encrypted {
		return f, nil // the gate runs on the plaintext, inside lmntd
	}
	if err := checkGcode(path, f); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// knownFormats are files owners pick by mistake, recognised by their first
// bytes, with what to do instead.
var knownFormats = []struct {
	magic []byte
	what  string
	hint  string
}{
	{[]byte{0x1f, 0x8b}, "is gzip-compressed", "decompress it first (gunzip -k FILE) and print the .gcode"},
	{[]byte("\x89PNG\r\n\x1a\n"), "is a PNG image, not G-code", "export G-code from your slicer"},
	{[]byte{0xff, 0xd8, 0xff}, "is a JPEG image, not G-code", "export G-code from your slicer"},
	{[]byte("PK\x03\x04"), "is a ZIP archive (a 3MF project?), not G-code", "export G-code from your slicer"},
	{[]byte("GCDE"), "is binary G-code (.bgcode), which Klipper cannot print", "turn off binary G-code in the slicer's printer settings and export again"},
	{[]byte("solid "), "looks like an STL model, not G-code", "slice it first"},
}

func checkGcode(path string, f *os.File) error {
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(8)
	for _, k := range knownFormats {
		if bytes.HasPrefix(head, k.magic) {
			return fileErrorf("%s %s: %s", path, k.what, k.hint)
		}
	}
	in := gcode.NewInspector(gcode.Options{})
	_, err := io.Copy(in, br)
	if err == nil {
		_, err = in.Finish()
	}
	var re *gcode.RejectError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("%s is not G-code Klipper can print: %s (line %d)", path, re.Reason, re.Line)
		switch re.Reason {
		case gcode.ReasonInvalidUTF8, gcode.ReasonNULByte:
			msg += "; it looks binary: if it is encrypted, give its key with --fernet-key-file or --dek-package-file"
		case gcode.ReasonNotGCode, gcode.ReasonTooFewCommands, gcode.ReasonNoMotion, gcode.ReasonEmpty:
			msg += "; export the G-code from your slicer"
		}
		return &fileError{msg}
	}
	if err != nil {
		return fileErrorf("cannot read %s: %v", path, plainErr(err))
	}
	return nil
}

// plainErr drops Go's "open FILE:" / "read FILE:" wrapper, whose path the
// caller already names.
func plainErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

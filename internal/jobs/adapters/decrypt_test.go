package adapters_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
)

// The engine shows a Decryptor's error text only when the error is marked
// as saying nothing about the plaintext; the adapter is where the
// pipeline's failures get (or do not get) that mark.
func TestDecryptorMarksOnlyHarmlessFailures(t *testing.T) {
	readErr := errors.New("connection reset by peer")
	cases := []struct {
		name       string
		body       io.Reader
		unreadable bool
	}{
		{"body read fails", io.MultiReader(strings.NewReader("G28\n"), iotest.ErrReader(readErr)), true},
		{"NUL byte in the G-code", strings.NewReader("G28\nG1 X1\x00\n"), false},
		{"invalid UTF-8", strings.NewReader("G28\n; \xff\xfe\n"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := adapters.Decryptor{}
			p, err := d.Prepare(t.Context(), "job-1", c.body, jobs.KeyMaterial{})
			if err == nil {
				p.File.Close()
				t.Fatal("Prepare succeeded")
			}
			if got := errors.Is(err, jobs.ErrUnreadableBody); got != c.unreadable {
				t.Fatalf("errors.Is(%v, ErrUnreadableBody) = %v, want %v", err, got, c.unreadable)
			}
			if errors.Is(err, jobs.ErrNoMemory) {
				t.Fatalf("%v marked as a memory failure", err)
			}
			if c.unreadable && !strings.Contains(err.Error(), readErr.Error()) {
				t.Fatalf("the mark changed the text: %v", err)
			}
		})
	}
}

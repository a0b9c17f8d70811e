package pipeline

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// A memfd that refuses writes (here: sealed, so the kernel answers EPERM)
// fails the very Write whose chunk it refused, named StageMemfd, and every
// later one.
func TestSinkReportsMemfdRefusal(t *testing.T) {
	f := testutil.SealedMemfd(t, nil)
	s := newSink(context.Background(), f, gcode.Options{}, threadprio.Go)
	defer s.close()
	chunk := gcodeSample(t)[:64<<10]
	for i := range 2 {
		if _, err := s.Write(chunk); !errors.Is(err, unix.EPERM) || s.stage != StageMemfd {
			t.Fatalf("Write %d: %v at stage %q, want EPERM at %q", i, err, s.stage, StageMemfd)
		}
	}
	if err := s.finish(); !errors.Is(err, unix.EPERM) {
		t.Fatalf("finish: %v, want EPERM", err)
	}
	if s.written != 0 || s.size != 0 {
		t.Fatalf("%d bytes written to a sealed memfd, %d accepted", s.written, s.size)
	}
}

// Every byte reaches the memfd in order whatever the sizes of the writes,
// and a chunk the gate refuses is reported as StageGate.
func TestSinkOrderAndGate(t *testing.T) {
	f, err := memfd.Create("sink")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := gcodeSample(t)
	s := newSink(context.Background(), f, gcode.Options{}, threadprio.Go)
	for rest, i := src, 0; len(rest) > 0; i++ {
		n := min(len(rest), []int{1, 4095, 4096, 100 << 10, 100}[i%5])
		if _, err := s.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if _, err := s.Write([]byte("\x00")); err == nil || s.stage != StageGate {
		t.Fatalf("NUL byte: %v at stage %q, want a rejection at %q", err, s.stage, StageGate)
	}
	if err := s.finish(); err != nil {
		t.Fatal(err)
	}
	if s.size != int64(len(src)) {
		t.Fatalf("accepted %d, want %d", s.size, len(src))
	}
	got := make([]byte, len(src)+2)
	n, err := unix.Pread(f.Fd(), got, 0)
	if err != nil || !bytes.Equal(got[:len(src)], src) {
		t.Fatalf("memfd content differs (%d bytes, err %v)", n, err)
	}
}

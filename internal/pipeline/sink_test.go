package pipeline

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// The sink's helper writes the memfd after Write has returned, so a memfd
// that refuses writes (here: sealed, so the kernel answers EPERM) is
// reported by a later Write, named StageMemfd, or by finish; never lost.
func TestSinkReportsLateMemfdRefusal(t *testing.T) {
	f, err := memfd.Create("refusing")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	s := newSink(context.Background(), f, gcode.Options{})
	defer s.close()
	chunk := gcodeSample(t)
	chunk = chunk[:min(len(chunk), 3*sinkPiece+5)] // several pieces, the last one partial
	var writeErr error
	for range 4 {
		if _, writeErr = s.Write(chunk); writeErr != nil {
			break
		}
	}
	finishErr := s.finish()
	if !errors.Is(finishErr, unix.EPERM) {
		t.Fatalf("finish: %v, want EPERM", finishErr)
	}
	if writeErr != nil && (!errors.Is(writeErr, unix.EPERM) || s.stage != StageMemfd) {
		t.Fatalf("Write: %v at stage %q, want EPERM at %q", writeErr, s.stage, StageMemfd)
	}
	if s.written != 0 {
		t.Fatalf("%d bytes written to a sealed memfd", s.written)
	}
}

// Every byte reaches the hash and the memfd in order, whatever the sizes of
// the writes against the pieces, and the pieces are wiped at the end.
func TestSinkOrderAndWipe(t *testing.T) {
	f, err := memfd.Create("sink")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := gcodeSample(t)
	if len(src) <= sinkPieces*sinkPiece {
		t.Fatalf("sample of %d bytes: too short to reuse the pieces", len(src))
	}
	s := newSink(context.Background(), f, gcode.Options{})
	for rest, i := src, 0; len(rest) > 0; i++ {
		n := min(len(rest), []int{1, sinkPiece - 1, sinkPiece, 2*sinkPiece + 7, 100}[i%5])
		if _, err := s.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := s.finish(); err != nil {
		t.Fatal(err)
	}
	if s.written != int64(len(src)) || s.size != int64(len(src)) {
		t.Fatalf("written %d, accepted %d, want %d", s.written, s.size, len(src))
	}
	got := make([]byte, len(src)+1)
	n, err := unix.Pread(f.Fd(), got, 0)
	if err != nil || !bytes.Equal(got[:n], src) {
		t.Fatalf("memfd content differs (%d bytes, err %v)", n, err)
	}
	for i, piece := range s.pieces {
		if !bytes.Equal(piece, make([]byte, len(piece))) {
			t.Fatalf("piece %d not wiped", i)
		}
	}
}

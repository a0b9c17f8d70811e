package jobs

import (
	"errors"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/mdstub"
)

// This file gives a job its metadata stub (internal/mdstub): built in
// memory once the job passed the compatibility check, written into
// Klipper's gcodes/.lmnt folder only at the hand-off (after every gate),
// named in print_stats so Mainsail and Moonraker's history show the job
// like a local file, and removed when the job ends.

// StubStore is where stubs live (an mdstub.Dir).
type StubStore interface {
	Reserve(title string, busy map[string]bool) (string, error)
	Write(rel string, data []byte) error
	Remove(rel string) error
	Clean(keep map[string]bool) ([]string, error)
}

// defaultStubGrace: how long a finished job's stub stays, so Moonraker's
// history (which re-reads the metadata when the print ends) and Mainsail's
// "print finished" view still find it.
const defaultStubGrace = 30 * time.Second

// buildStub makes the stub of a prepared job in memory; nil when stubs are
// off or the slicer is one Moonraker would not read anyway.
func (e *Engine) buildStub(id string, p *Prepared) []byte {
	if e.o.Stubs == nil || p == nil || p.File == nil {
		return nil
	}
	stub, err := mdstub.Build(fdReaderAt(p.File.Fd()), p.Size)
	if err != nil {
		e.log.Info("no metadata stub for the job", "job", id, "err", err)
		return nil
	}
	return stub.Data
}

// reserveStubLocked picks the stub's name for r and records it in r (the
// caller journals r), so a restarted lmntd still knows the print is ours.
func (e *Engine) reserveStubLocked(r *record, stub []byte) {
	if stub == nil {
		return
	}
	title := r.Name
	if title == "" {
		title = "LMNT job " + shortID(r.ID)
	}
	name, err := e.o.Stubs.Reserve(title, nil)
	if err != nil {
		e.log.Warn("no metadata stub for the job", "job", r.ID, "err", err)
		return
	}
	r.PrintName = name
}

// writeStub stores the reserved stub; the print_stats name to hand off ("":
// none, Klipper shows the virtual name).
func (e *Engine) writeStub(id, name string, stub []byte) string {
	if name == "" {
		return ""
	}
	if err := e.o.Stubs.Write(name, stub); err != nil {
		e.log.Warn("metadata stub not written; Mainsail shows the job without its metadata", "job", id, "err", err)
		return ""
	}
	return name
}

// stubEndedLocked removes a finished job's stub after the grace period,
// unless the owner keeps stubs for the history's thumbnails.
func (e *Engine) stubEndedLocked(r *record) {
	name := r.PrintName
	if name == "" || e.o.Stubs == nil || e.o.KeepStubs {
		return
	}
	stubs, log := e.o.Stubs, e.log
	time.AfterFunc(e.o.StubGrace, func() {
		if err := stubs.Remove(name); err != nil {
			log.Warn("removing a finished job's metadata stub", "stub", name, "err", err)
		}
	})
}

// cleanStubsLocked removes the stubs a previous run left (a crash, a power
// cut), except those of prints Klipper may still be running.
func (e *Engine) cleanStubsLocked() {
	if e.o.Stubs == nil || e.o.KeepStubs {
		return
	}
	keep := map[string]bool{}
	for _, r := range e.recs {
		if r.PrintName != "" && r.State.handedOff() {
			keep[r.PrintName] = true
		}
	}
	removed, err := e.o.Stubs.Clean(keep)
	if err != nil {
		e.log.Warn("cleaning stale metadata stubs", "err", err)
	}
	if len(removed) > 0 {
		e.log.Info("removed stale metadata stubs", "stubs", removed)
	}
}

// printsJob tells whether Klipper's print_stats file name is job id's.
func (e *Engine) printsJob(id, filename string) bool {
	if filename == VirtualName(id) {
		return true
	}
	r := e.recs[id]
	return r != nil && r.PrintName != "" && filename == r.PrintName
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// fdReaderAt reads a memfd with pread, leaving its offset alone.
type fdReaderAt int

func (fd fdReaderAt) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(int(fd), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return done, nil
}

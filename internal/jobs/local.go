package jobs

import (
	"errors"
	"fmt"
)

// Local uploads wait in memory (each a memfd the API filled) from the moment
// they are queued until their job has been decrypted. Anyone allowed to use
// the API could otherwise fill the printer's memory with them, so their
// number and total size are capped, and a body whose job ends before it
// starts (cancelled, refused) is released at once rather than when the
// garbage collector gets to it.

// Default caps, sized for a 1 GB board: with the default 512 MiB
// max_download_size the daemon needs at most about
// max_download_size + defaultLocalBytes + 128 MiB (the unit's MemoryMax=).
const (
	defaultLocalJobs  = 4
	defaultLocalBytes = 256 << 20
)

// ErrLocalQueueFull is returned by SubmitLocal when another upload would
// exceed limits.max_local_jobs or limits.max_local_queue_size.
var ErrLocalQueueFull = errors.New("jobs: the local job queue is full")

// localLimits returns the caps in force (they may change on reload).
func (e *Engine) localLimits() (jobs int, bytes int64) {
	jobs, bytes = defaultLocalJobs, defaultLocalBytes
	if e.o.LocalLimits != nil {
		if j, b := e.o.LocalLimits(); j > 0 && b > 0 {
			jobs, bytes = j, b
		}
	}
	return jobs, bytes
}

// localHeldLocked counts the local bodies in memory: those queued and the
// one being decrypted.
func (e *Engine) localHeldLocked() (n int, bytes int64) {
	for _, lj := range e.locals {
		n++
		bytes += max(lj.Size, 0)
	}
	if a := e.active; a != nil && a.localHeld {
		n++
		bytes += a.localSize
	}
	return n, bytes
}

// checkLocalRoomLocked refuses a body of size bytes that does not fit.
func (e *Engine) checkLocalRoomLocked(size int64) error {
	maxJobs, maxBytes := e.localLimits()
	n, held := e.localHeldLocked()
	switch {
	case size > maxBytes:
		return fmt.Errorf("%w: the file's %d bytes exceed limits.max_local_queue_size (%d bytes)", ErrLocalQueueFull, size, maxBytes)
	case n+1 > maxJobs:
		return fmt.Errorf("%w: %d local jobs are waiting, the limit (limits.max_local_jobs); try again when one has started", ErrLocalQueueFull, n)
	case held+size > maxBytes:
		return fmt.Errorf("%w: local jobs waiting hold %d of limits.max_local_queue_size (%d bytes); this file needs %d; try again when one has started",
			ErrLocalQueueFull, held, maxBytes, size)
	}
	return nil
}

// LocalRoom is the most bytes another upload may have now, so the API can
// refuse a larger one before storing it. (When the count is reached, the
// upload is refused by SubmitLocal, with an error that says so.)
func (e *Engine) LocalRoom() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, maxBytes := e.localLimits()
	_, held := e.localHeldLocked()
	return max(maxBytes-held, 0)
}

// releaseLocalLocked frees the body of a local job that will not be read.
func (e *Engine) releaseLocalLocked(id string) {
	if lj, ok := e.locals[id]; ok {
		delete(e.locals, id)
		if lj.Release != nil {
			lj.Release()
		}
	}
}

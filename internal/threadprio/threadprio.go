// Package threadprio reads and sets the CPU nice value and I/O priority of
// one OS thread, and starts goroutines that keep the priority of the thread
// that starts them. Linux applies both per thread, and the Go runtime runs
// any goroutine on any of its threads: a goroutine keeps a priority only on
// a thread locked to it (runtime.LockOSThread).
package threadprio

import (
	"runtime"

	"golang.org/x/sys/unix"
)

const (
	ioprioWhoProcess = 1 // IOPRIO_WHO_PROCESS: with a tid, one thread
	ioprioClassShift = 13
	ioprioClassBE    = 2 // IOPRIO_CLASS_BE (best effort)
)

// IOPrioBestEffortLowest is the lowest level (7) of the best-effort class.
const IOPrioBestEffortLowest = ioprioClassBE<<ioprioClassShift | 7

// Priority is a thread's nice value and its raw I/O priority (class and
// level as ioprio_get(2) returns them).
type Priority struct {
	Nice   int
	IOPrio int
}

// Of returns the priority of thread tid (a pid is its main thread).
func Of(tid int) (Priority, error) {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return Priority{}, err
	}
	io, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return Priority{}, errno
	}
	// The raw getpriority syscall answers 20-nice.
	return Priority{Nice: 20 - p, IOPrio: int(io)}, nil
}

// SetNice sets the calling thread's nice value.
func SetNice(nice int) error {
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
}

// SetIOPrio sets the calling thread's I/O priority.
func SetIOPrio(ioprio int) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(unix.Gettid()), uintptr(ioprio)); errno != 0 {
		return errno
	}
	return nil
}

// initial is the priority the process started with: its main thread's
// while package initialisation runs there, before any goroutine could
// lower it (a goroutine that locks itself to a thread may be given the
// main thread, so reading it later could see a lowered priority).
var initial, initialErr = Of(unix.Gettid())

// Go starts f on a new goroutine that runs at the priority of the calling
// thread. When that is the priority the process started with, f is an
// ordinary goroutine. Otherwise (the caller runs on a thread locked and
// lowered for background work) f gets a thread of its own with the same
// priority, which is discarded when f returns (it is never unlocked, so the
// runtime does not reuse it for other goroutines at that priority): that
// costs a thread per goroutine and a futex wake-up at each hand-over, so it
// is done only when needed. The caller must be locked to its thread, or the
// priority read is that of whichever thread it happens to run on. Setting
// the priority is best effort: f runs in any case.
func Go(f func()) {
	p, err := Of(unix.Gettid())
	if err != nil || (initialErr == nil && p == initial) {
		go f()
		return
	}
	go func() {
		runtime.LockOSThread()
		SetNice(p.Nice)
		SetIOPrio(p.IOPrio)
		f()
	}()
}

package jobs

import (
	"log/slog"
	"runtime"

	"golang.org/x/sys/unix"
)

// Priority of the download-and-decrypt work relative to Klipper, which must
// never starve for CPU or I/O while it streams moves to the MCU.
const (
	workNice = 10 // CPU: nice +10

	ioprioWhoProcess = 1 // IOPRIO_WHO_PROCESS: with a tid, one thread
	ioprioClassBE    = 2 // IOPRIO_CLASS_BE (best effort)
	ioprioClassShift = 13
	ioprioBELowest   = 7 // lowest level of the best-effort class
)

// runLowPriority runs work on a dedicated OS thread whose CPU nice value and
// I/O priority are lowered, and returns its result. Everything work does on
// its own goroutine (network reads, TLS, AES, memfd writes) runs on that
// thread. The goroutine exits without unlocking, so the runtime discards the
// thread instead of reusing it at the lowered priority. Lowering priority is
// best effort: failures are logged and the work still runs.
func runLowPriority[T any](log *slog.Logger, work func() T) T {
	done := make(chan T, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		tid := unix.Gettid()
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, workNice); err != nil {
			log.Warn("could not lower CPU priority of the decrypt thread", "err", err)
		}
		prio := uintptr(ioprioClassBE<<ioprioClassShift | ioprioBELowest)
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), prio); errno != 0 {
			log.Warn("could not lower I/O priority of the decrypt thread", "err", errno)
		}
		done <- work()
	}()
	return <-done
}

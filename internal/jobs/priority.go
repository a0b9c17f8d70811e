package jobs

import (
	"log/slog"
	"runtime"

	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// Priority of the download-and-decrypt work relative to Klipper, which must
// never starve for CPU or I/O while it streams moves to the MCU.
const (
	workNice   = 10                                // CPU: nice +10
	workIOPrio = threadprio.IOPrioBestEffortLowest // I/O: lowest best-effort level
)

// runLowPriority runs work on a dedicated OS thread whose CPU nice value and
// I/O priority are lowered, and returns its result. All of a job's work that
// grows with its size runs at that priority: on work's own goroutine, the
// body's network reads and TLS record decryption (the marketplace client
// downloads over HTTP/1.1, whose body is read by the goroutine reading it;
// TestDownloadBodyReadAtLowPriority measures it), and the decrypt
// pipeline's other goroutines (its memfd writer, jobcrypt's writer and
// decrypting helpers), which it starts with threadprio.Go, each on a thread
// of its own at this same priority. What net/http does on goroutines of its
// own, setting up the connection (dial, TLS handshake, request, response
// head), is a fixed, small cost per job and runs at normal priority. The
// goroutine exits without unlocking, so the runtime discards the thread
// instead of reusing it at the lowered priority. Lowering priority is best
// effort: failures are logged and the work still runs.
func runLowPriority[T any](log *slog.Logger, work func() T) T {
	done := make(chan T, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := threadprio.SetNice(workNice); err != nil {
			log.Warn("could not lower CPU priority of the decrypt thread", "err", err)
		}
		if err := threadprio.SetIOPrio(workIOPrio); err != nil {
			log.Warn("could not lower I/O priority of the decrypt thread", "err", err)
		}
		done <- work()
	}()
	return <-done
}

package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// Klipper is the engine's jobs.Printer: the bridge server the Klipper extra
// connects to.
type Klipper struct{ Server *klipper.Server }

// Status converts the bridge's state. Connected requires a status of the
// current connection: before it, nothing is known about Klipper.
func (k Klipper) Status() jobs.PrinterStatus {
	st := k.Server.State()
	s := st.Status
	return jobs.PrinterStatus{
		Connected:      st.Connected && st.HaveStatus,
		Session:        st.ConnectedAt.Format(time.RFC3339Nano),
		Klippy:         s.Klippy.State,
		KlippyMessage:  s.Klippy.Message,
		PrintState:     s.PrintStats.State,
		Filename:       s.PrintStats.Filename,
		PrintMessage:   s.PrintStats.Message,
		PrintDuration:  s.PrintStats.PrintDuration,
		TotalDuration:  s.PrintStats.TotalDuration,
		FilamentUsed:   s.PrintStats.FilamentUsed,
		Progress:       s.VirtualSDCard.Progress,
		SDActive:       s.VirtualSDCard.IsActive,
		ReadyConfirmed: s.ReadyConfirmed,
	}
}

// Subscribe signals bridge state changes.
func (k Klipper) Subscribe() (<-chan struct{}, func()) { return k.Server.Subscribe() }

// Print hands the memfd to Klipper.
func (k Klipper) Print(ctx context.Context, req jobs.PrintRequest, f *memfd.File) error {
	err := k.Server.Print(ctx, klipper.PrintRequest{JobID: req.JobID, Name: req.Name, Filename: req.Filename,
		Title: req.Title, Metadata: req.Metadata}, f)
	if errors.Is(err, klipper.ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) {
		// The packet may have arrived: only Klipper's status can tell.
		return fmt.Errorf("%w: %w", jobs.ErrHandOffUncertain, err)
	}
	return err
}

// Cancel asks Klipper to cancel the job's print.
func (k Klipper) Cancel(ctx context.Context, jobID, reason string) error {
	return k.Server.Cancel(ctx, jobID, reason)
}

// Console shows a line on Klipper's console.
func (k Klipper) Console(text string) error {
	err := k.Server.Console(text)
	if errors.Is(err, klipper.ErrNotConnected) {
		return nil // nobody to show it to
	}
	return err
}

package adapters

import (
	"context"
	"log/slog"

	"github.com/lmnt-marketplace/lmntd/internal/compat"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// PrinterFit gives the engine its jobs.FitCheck (Check): package compat
// against Klipper's printer.cfg as the daemon last read it and the owner's
// configured filament type. Unknown values on either side never block.
type PrinterFit struct {
	// Printer returns the printer as printer.cfg describes it now (a zero
	// Printer when printer.cfg was never read: nothing is known).
	Printer func() klippercfg.Printer
	// FilamentType returns jobs.filament_type ("" when not set); it is
	// read for each job, so a configuration reload applies to the next one.
	FilamentType func() string
	Logger       *slog.Logger
}

// Check compares one decrypted job with the printer; its error (a
// *compat.IncompatibleError) names every mismatch.
func (c PrinterFit) Check(_ context.Context, jobID string, m *gcode.Metadata) error {
	var p klippercfg.Printer
	if c.Printer != nil {
		p = c.Printer()
	}
	var opts compat.Options
	if c.FilamentType != nil {
		opts.FilamentType = c.FilamentType()
	}
	res := compat.Check(m, p, opts)
	if log := c.Logger; log != nil {
		for _, u := range res.Unchecked {
			log.Info("compatibility not checked", "job", jobID, "item", u.Item, "reason", u.Reason)
		}
		for _, n := range res.Notes {
			log.Warn("compatibility note", "job", jobID, "item", n.Item, "note", n.Message)
		}
	}
	return res.Err()
}

package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/compat"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/pipeline"
)

// This file adapts the real marketplace client and Klipper bridge to the
// engine's interfaces. They are thin on purpose: the daemon wires them, the
// acceptance tests run through the very same code.

// MarketplaceClient adapts a *marketplace.Client.
type MarketplaceClient struct{ Client *marketplace.Client }

// OfferFromJob converts a polled job. The key material stays in memory.
func OfferFromJob(j marketplace.Job) Offer {
	o := Offer{ID: j.ID, PurchaseID: j.PurchaseID, DownloadURL: j.DownloadURL,
		Keys: KeyMaterial{DEKPackage: j.DEKPackage, IVHex: j.IVHex}}
	if t, err := parseCreated(j.CreatedAt); err == nil {
		o.CreatedAt = t
	}
	return o
}

// OffersFromJobs converts a poll's jobs (for Engine.Offer from the poller).
func OffersFromJobs(js []marketplace.Job) []Offer {
	out := make([]Offer, 0, len(js))
	for _, j := range js {
		out = append(out, OfferFromJob(j))
	}
	return out
}

// Download opens the job's body.
func (m MarketplaceClient) Download(ctx context.Context, o Offer) (io.ReadCloser, error) {
	d, err := m.Client.Download(ctx, marketplace.Job{ID: o.ID, PurchaseID: o.PurchaseID,
		DownloadURL: o.DownloadURL, DEKPackage: o.Keys.DEKPackage, IVHex: o.Keys.IVHex})
	if err != nil {
		return nil, err
	}
	return SizedDownload{ReadCloser: d, Length: d.Size}, nil
}

// SizedDownload is a body with its announced length (a SizedBody).
type SizedDownload struct {
	io.ReadCloser
	Length int64 // -1: unknown
}

// Size returns the announced length.
func (s SizedDownload) Size() int64 { return s.Length }

// PostStatus makes one delivery attempt.
func (m MarketplaceClient) PostStatus(ctx context.Context, jobID string, r Report) (Outcome, string, error) {
	res := m.Client.PostJobStatus(ctx, jobID, marketplace.StatusReport{Status: r.Status, Message: r.Message,
		FilamentUsed: r.FilamentUsed, PrintDuration: r.PrintDuration, TotalDuration: r.TotalDuration})
	answer := res.Answer
	if res.HTTPStatus != 0 {
		answer = fmt.Sprintf("HTTP %d: %s", res.HTTPStatus, res.Answer)
	}
	switch res.Outcome {
	case marketplace.Accepted:
		return Delivered, answer, nil
	case marketplace.Rejected:
		return Rejected, answer, res.Err
	default:
		return Retryable, answer, res.Err
	}
}

// Job fetches a job's keys again after a restart: the queue still lists a
// job the printer has not finished.
func (m MarketplaceClient) Job(ctx context.Context, jobID string) (Offer, error) {
	js, err := m.Client.Poll(ctx)
	if err != nil {
		return Offer{}, err
	}
	for _, j := range js {
		if j.ID == jobID {
			return OfferFromJob(j), nil
		}
	}
	return Offer{}, fmt.Errorf("%w: %s is not in the print queue any more", ErrJobGone, jobID)
}

// KlipperPrinter adapts a *klipper.Server.
type KlipperPrinter struct{ Server *klipper.Server }

// Status converts the bridge's state. Connected requires a status of the
// current connection: before it, nothing is known about Klipper.
func (k KlipperPrinter) Status() PrinterStatus {
	st := k.Server.State()
	s := st.Status
	return PrinterStatus{
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
func (k KlipperPrinter) Subscribe() (<-chan struct{}, func()) { return k.Server.Subscribe() }

// Print hands the memfd to Klipper.
func (k KlipperPrinter) Print(ctx context.Context, req PrintRequest, f *memfd.File) error {
	m := req.Metadata
	err := k.Server.Print(ctx, klipper.PrintRequest{JobID: req.JobID, Name: req.Name, Filename: req.Filename, Title: req.Title,
		Metadata: klipper.Metadata{TotalLayer: m.TotalLayer, EstimatedTime: m.EstimatedTime.Seconds(),
			Slicer: m.Slicer, FilamentUsedMM: m.FilamentUsedMM, FilamentType: m.FilamentType,
			LayerHeight: m.LayerHeight, ObjectHeight: m.ObjectHeight}}, f)
	if errors.Is(err, klipper.ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) {
		// The packet may have arrived: only Klipper's status can tell.
		return fmt.Errorf("%w: %w", ErrHandOffUncertain, err)
	}
	return err
}

// Cancel asks Klipper to cancel the job's print.
func (k KlipperPrinter) Cancel(ctx context.Context, jobID, reason string) error {
	return k.Server.Cancel(ctx, jobID, reason)
}

// Console shows a line on Klipper's console.
func (k KlipperPrinter) Console(text string) error {
	err := k.Server.Console(text)
	if errors.Is(err, klipper.ErrNotConnected) {
		return nil // nobody to show it to
	}
	return err
}

// MetadataFromGcode converts what the gate learned about a file.
func MetadataFromGcode(m *gcode.Metadata) Metadata {
	if m == nil {
		return Metadata{}
	}
	out := Metadata{
		Slicer:         m.SlicerName,
		EstimatedTime:  time.Duration(m.EstimatedTime * float64(time.Second)),
		TotalLayer:     m.LayerCount,
		NozzleDiameter: m.NozzleDiameter,
		FilamentType:   m.FilamentType,
		FilamentUsedMM: m.FilamentUsedMM,
		LayerHeight:    m.LayerHeight,
		ObjectHeight:   m.ObjectHeight,
		MaxZ:           m.MaxZ,
	}
	if m.Extents != nil {
		e := *m.Extents
		out.Extents = &e
	}
	return out
}

// PrinterCheck is the engine's CompatibilityCheck (package compat) against
// Klipper's printer.cfg as the daemon last read it and the owner's
// configured filament type. Unknown values on either side never block.
type PrinterCheck struct {
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
func (c PrinterCheck) Check(_ context.Context, jobID string, m Metadata) error {
	var p klippercfg.Printer
	if c.Printer != nil {
		p = c.Printer()
	}
	var opts compat.Options
	if c.FilamentType != nil {
		opts.FilamentType = c.FilamentType()
	}
	res := compat.Check(compat.Job{NozzleDiameter: m.NozzleDiameter, FilamentType: m.FilamentType,
		ObjectHeight: m.ObjectHeight, MaxZ: m.MaxZ, Extents: m.Extents}, p, opts)
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

// ErrNoPrinterKey: a job carries a DEK package but the decryptor has no way
// to get the printer's private key.
var ErrNoPrinterKey = errors.New("jobs: the printer's private key is not available")

// PipelineDecryptor runs the decrypt pipeline (jobcrypt → gcode gate →
// sealed memfd) for the engine.
type PipelineDecryptor struct {
	// PrivateKey unseals the printer's X25519 private key for one job.
	// The decryptor zeroises the returned array once the DEK package is
	// open, so the key is in memory only for the run.
	PrivateKey func() (*[32]byte, error)
	Logger     *slog.Logger
	Gate       gcode.Options
}

// Prepare decrypts and gates body into a sealed memfd.
func (p PipelineDecryptor) Prepare(ctx context.Context, jobID string, body io.Reader, keys KeyMaterial) (*Prepared, error) {
	in := pipeline.Input{Body: body, Name: "lmnt-" + jobID, Logger: p.Logger, Gate: p.Gate}
	switch {
	case keys.DEKPackage != "":
		if p.PrivateKey == nil {
			return nil, ErrNoPrinterKey
		}
		priv, err := p.PrivateKey()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPrinterKey, err)
		}
		defer clear(priv[:])
		in.Key = pipeline.DEKPackage(keys.DEKPackage, priv)
	case keys.FernetKey != "":
		in.Key = pipeline.FernetKey(keys.FernetKey)
	}
	if keys.IVHex != "" {
		iv, err := jobcrypt.ParseIVHex(keys.IVHex)
		if err != nil {
			return nil, &pipeline.Error{Stage: pipeline.StageKey, Err: err}
		}
		in.IV = &iv
	}
	res, err := pipeline.Run(ctx, in)
	if err != nil {
		return nil, err
	}
	return &Prepared{File: res.File, Size: res.Size, Metadata: MetadataFromGcode(res.Metadata)}, nil
}

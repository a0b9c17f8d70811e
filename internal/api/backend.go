package api

import (
	"context"
	"io"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

// Backend is what the API serves. The daemon implements it; every method
// must be safe for concurrent use and must return nothing secret (no printer
// token, download URL, DEK package or IV). Errors meant for the caller are
// *Error values; any other error is answered as a 500 with its text.
type Backend interface {
	// Status is the whole daemon state (GET /lmnt/v1/status and, in the
	// original plugin's shape, /machine/lmnt_marketplace/status).
	Status(ctx context.Context) apitype.Status
	// CheckJobs polls the marketplace now and reports the queue.
	CheckJobs(ctx context.Context) (apitype.JobStatus, error)
	// RefreshToken refreshes the printer token now.
	RefreshToken(ctx context.Context) (apitype.RefreshResult, error)
	// UserLogin signs a user in at the legacy auth service.
	UserLogin(ctx context.Context, email, password string) (apitype.LoginResult, error)
	// RegisterPrinter registers the printer with a user JWT (legacy).
	RegisterPrinter(ctx context.Context, r apitype.RegisterRequest) (apitype.RegisterResult, error)
	// StartPairing opens a pairing session, or returns the one already
	// open: concurrent callers share one session.
	StartPairing(ctx context.Context, r apitype.PairRequest) (apitype.Pairing, error)
	// PairingStatus reports the current (or last) pairing session.
	PairingStatus(ctx context.Context) (apitype.Pairing, error)
	// CompletePairing collects the token of an approved session now.
	CompletePairing(ctx context.Context) (apitype.Pairing, error)
	// SubmitLocal queues an uploaded file as a local job.
	SubmitLocal(ctx context.Context, p LocalPrint) (string, error)
	// Jobs is the job engine's snapshot.
	Jobs() apitype.Snapshot
	// CancelJob cancels a job.
	CancelJob(id, reason string) error
	// ConfirmBedClear records that the bed is clear (LMNT_READY).
	ConfirmBedClear() error
	// Keys describes the printer key (public parts only).
	Keys() apitype.KeysInfo
	// ImportLegacyKey imports the old plugin's key and token.
	ImportLegacyKey(ctx context.Context, r apitype.ImportLegacyRequest) (apitype.ImportLegacyResult, error)
	// Reseal moves the sealed key to another backend.
	Reseal(ctx context.Context, to string) (apitype.KeysInfo, error)
	// Doctor runs the health checks.
	Doctor(ctx context.Context, offline bool) apitype.DoctorReport
	// RestartWhenIdle asks the daemon to exit (status 75, restarted by
	// systemd) as soon as no job is downloading, decrypting or printing.
	RestartWhenIdle() apitype.RestartResult
}

// LocalPrint is an uploaded job. Body is opened once, when the printer is
// ready (closing it releases the upload). Keys live in memory only.
type LocalPrint struct {
	Name       string
	Body       func() (io.ReadCloser, error)
	Size       int64
	FernetKey  string
	DEKPackage string
	IVHex      string
}

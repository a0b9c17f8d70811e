// Package jobs is lmntd's job engine: it takes print jobs from the
// marketplace (or the local start-print API), keeps a durable journal of each
// job's state, starts one print at a time when the printer is ready, has the
// ciphertext downloaded and decrypted into a sealed memfd just before the
// print, hands it to Klipper, follows the print through Klipper's status
// events, and reports every step to the marketplace through a durable outbox.
//
// Job states: accepted → downloading → ready → printing ⇄ paused →
// succeeded | failed | cancelled. Every transition is written to the state
// directory (atomically, fsync'd) before it is acted on; the journal holds ids,
// states and messages only, never a URL, DEK package, IV or token. A job's
// pending status reports live in the same record as its state, so a state
// change and the report it causes are persisted by one atomic write.
//
// The engine talks to the rest of the daemon through small consumer-side
// interfaces, its ports (Marketplace, Decryptor, Printer, FitCheck, Clock),
// with types of its own; package jobs/adapters plugs the real marketplace
// client, pipeline and Klipper bridge into them.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// State is where a job is in its life.
type State string

// The job states, in the order a job normally goes through them.
const (
	// Accepted: known and journaled, waiting for the printer (queued).
	Accepted State = "accepted"
	// Downloading: being downloaded, decrypted and checked into a memfd.
	Downloading State = "downloading"
	// Ready: the sealed memfd is complete; the hand-off to Klipper is next.
	Ready State = "ready"
	// Printing: handed to Klipper. From here on the job is never
	// downloaded or printed again, whatever happens.
	Printing State = "printing"
	// Paused: Klipper paused the print.
	Paused State = "paused"
	// Succeeded: Klipper reported the print complete.
	Succeeded State = "succeeded"
	// Failed: the job ended with an error (its message says which).
	Failed State = "failed"
	// Cancelled: the owner or Klipper cancelled the job.
	Cancelled State = "cancelled"
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool {
	return s == Succeeded || s == Failed || s == Cancelled
}

// handedOff reports whether a job in state s has been given to Klipper (or
// is about to be: the printing state is journaled before the hand-off).
func (s State) handedOff() bool { return s == Printing || s == Paused }

// Transition is one journaled change of a job's state.
type Transition struct {
	ID    string
	Local bool
	To    State
	At    time.Time
}

// Report is one job-status report for the marketplace.
type Report struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	// Stats, on success only (from Klipper's print_stats).
	FilamentUsed  *float64 `json:"filament_used,omitempty"`  // mm
	PrintDuration *float64 `json:"print_duration,omitempty"` // s
	TotalDuration *float64 `json:"total_duration,omitempty"` // s
}

// Outcome classifies the marketplace's answer to a status report.
type Outcome int

const (
	// Retryable: network error, 5xx, 401 (token being refreshed), 408, 429.
	Retryable Outcome = iota
	// Delivered: 2xx, the report is done.
	Delivered
	// Rejected: any other 4xx; retrying cannot help. The answer is recorded.
	Rejected
)

// KeyMaterial is what decrypts one job. It lives in memory only, for one job.
// No fields set means a plaintext body.
type KeyMaterial struct {
	DEKPackage string // "B64(epk):B64(nonce):B64(box)"
	IVHex      string // 32 hex characters
	FernetKey  string // URL-safe Base64, local jobs only
}

func (k KeyMaterial) String() string { return "key material " + redact.Marker }

// Offer is a job as a marketplace poll announced it. Everything in it stays
// in memory; only ID, PurchaseID, Name and CreatedAt reach the journal.
type Offer struct {
	ID          string
	PurchaseID  string
	Name        string
	CreatedAt   time.Time
	DownloadURL string // signed; never journaled or logged
	Keys        KeyMaterial
}

// LocalJob is a job from the local start-print API. It is never reported to
// the marketplace. Open is called once, when the printer is ready for the
// job; a local job that has not started when the daemon stops is failed on
// restart (its body is gone).
type LocalJob struct {
	Name string
	Open func(ctx context.Context) (io.ReadCloser, error)
	Keys KeyMaterial
	// Size is the body's size in bytes, counted against the local queue's
	// cap while the body is held.
	Size int64
	// Release, when set, frees the body of a job that ends before Open is
	// called (cancelled, refused, lmntd stopping). Open's body is released
	// by closing it.
	Release func()
}

// Prepared is a decrypted, gated job in a sealed memfd: the only place the
// plaintext exists. The engine closes File when the print ends or fails.
type Prepared struct {
	File *memfd.File
	Size int64
	// Metadata is what the G-code gate learned about the file (nil:
	// nothing); zero values are unknown.
	Metadata *gcode.Metadata
}

// PrinterStatus is the Klipper side as the bridge last saw it.
type PrinterStatus struct {
	// Connected: the Klipper extra is connected and has sent a status.
	Connected bool
	// Session identifies the bridge connection (for example the time it
	// was established). A print handed over one session and not shown by
	// the next one did not survive whatever broke the connection.
	Session       string
	Klippy        string // ready, startup, shutdown, error
	KlippyMessage string
	// print_stats
	PrintState    string // standby, printing, paused, complete, cancelled, error
	Filename      string
	PrintMessage  string
	PrintDuration float64
	TotalDuration float64
	FilamentUsed  float64
	// virtual_sdcard
	Progress float64 // 0..1
	SDActive bool
	// ReadyConfirmed: the owner ran LMNT_READY in Klipper since the last
	// print there (the extra keeps it while lmntd is not connected).
	ReadyConfirmed bool
}

// PrintRequest describes the file handed to Klipper.
type PrintRequest struct {
	JobID    string
	Name     string // virtual_<job id>.gcode
	Filename string // the metadata stub's print_stats name, "" for none
	Title    string
	Size     int64
	Metadata *gcode.Metadata
}

// Marketplace is what the engine needs from the marketplace client. The
// poller feeds new jobs in through Engine.Offer.
type Marketplace interface {
	// Download opens the job's ciphertext (or plaintext) body.
	Download(ctx context.Context, job Offer) (io.ReadCloser, error)
	// PostStatus makes one attempt to deliver a report. answer is the
	// server's reply (status line and a short body) for the record. An
	// error that is a backoff.ServerWaiter (the server's Retry-After) is
	// never retried sooner.
	PostStatus(ctx context.Context, jobID string, r Report) (o Outcome, answer string, err error)
}

// SizedBody is optionally implemented by the body Marketplace.Download (or
// LocalJob.Open) returns: its announced length in bytes, -1 when unknown.
// With it the engine reports download progress on Klipper's console and to
// the marketplace.
type SizedBody interface {
	Size() int64
}

// Decryptor turns a body into a sealed memfd (the pipeline: decrypt, gate,
// metadata). A failure to read the body is marked with UnreadableBody, a
// failure to make the memfd with NoMemory: only those texts leave the
// process; any other error is a verification failure (verify.go).
type Decryptor interface {
	Prepare(ctx context.Context, jobID string, body io.Reader, keys KeyMaterial) (*Prepared, error)
}

// Printer is the Klipper side, through the bridge.
type Printer interface {
	Status() PrinterStatus
	// Subscribe signals changes of Status until cancel is called.
	// Signals may coalesce: after one, the engine reads Status.
	Subscribe() (changed <-chan struct{}, cancel func())
	// Print hands the sealed memfd to Klipper and returns once Klipper has
	// accepted (or refused) it. The printer does not keep f open beyond
	// the call: Klipper gets its own descriptor.
	Print(ctx context.Context, req PrintRequest, f *memfd.File) error
	// Cancel asks Klipper to cancel the print of jobID.
	Cancel(ctx context.Context, jobID, reason string) error
	// Console shows a line ("LMNT: …") on Klipper's console.
	Console(text string) error
}

// FitCheck vets a decrypted job against the printer before it reaches
// Klipper (nozzle, bed size, filament): does the job fit this printer? An
// error fails the job with its message. It must not block for long.
type FitCheck func(ctx context.Context, jobID string, m *gcode.Metadata) error

// Errors returned by the engine's API.
var (
	ErrUnknownJob   = errors.New("jobs: no such job")
	ErrFinished     = errors.New("jobs: job already finished")
	ErrInvalidJobID = errors.New("jobs: invalid job id")
	// ErrHandOffUncertain is wrapped by Printer.Print when the connection
	// broke before Klipper answered: Klipper may or may not have started
	// the print. The engine then waits for Klipper's status to tell.
	ErrHandOffUncertain = errors.New("jobs: hand-off outcome unknown")
)

// validID admits ids that are safe as file names and in Klipper's virtual
// file name (Klipper cuts names at '#', '*', ';'; dots are kept out so no id
// can be "." or "..").
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%w %q: want 1-128 of [A-Za-z0-9_-]", ErrInvalidJobID, id)
	}
	return nil
}

// VirtualName is the file name Klipper shows for a job.
func VirtualName(jobID string) string { return "virtual_" + jobID + ".gcode" }

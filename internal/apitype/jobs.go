package apitype

import "time"

// JobState is where a job is in its life, as the API reports it.
type JobState string

// The job states, in the order a job normally goes through them.
const (
	// JobAccepted: known and journaled, waiting for the printer (queued).
	JobAccepted JobState = "accepted"
	// JobDownloading: being downloaded, decrypted and checked into memory.
	JobDownloading JobState = "downloading"
	// JobReady: decrypted and checked; the hand-off to Klipper is next.
	JobReady JobState = "ready"
	// JobPrinting: handed to Klipper.
	JobPrinting JobState = "printing"
	// JobPaused: Klipper paused the print.
	JobPaused JobState = "paused"
	// JobSucceeded: Klipper reported the print complete.
	JobSucceeded JobState = "succeeded"
	// JobFailed: the job ended with an error (its message says which).
	JobFailed JobState = "failed"
	// JobCancelled: the owner or Klipper cancelled the job.
	JobCancelled JobState = "cancelled"
)

// VerificationFailed starts the message of every job whose file failed
// decryption or a check: the one thing anyone outside lmntd learns about
// such a file (no offsets, no detail: no decryption oracle). The engine
// writes it; the status page recognises it.
const VerificationFailed = "The file failed verification"

// JobInfo is one job as the API and CLI show it. No secrets.
type JobInfo struct {
	ID       string    `json:"id"`
	Name     string    `json:"name,omitempty"`
	Local    bool      `json:"local,omitempty"`
	State    JobState  `json:"state"`
	Message  string    `json:"message,omitempty"`
	Progress float64   `json:"progress"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// PendingReports counts status reports not yet delivered.
	PendingReports int `json:"pending_reports,omitempty"`
	// ProgressUnknown: the job is in Klipper but the bridge is down (or
	// not yet back after a restart), so Progress is only the last known.
	ProgressUnknown bool `json:"progress_unknown,omitempty"`
}

// Snapshot is the job engine's state: the active job, the queue and the
// recent jobs (GET /lmnt/v1/jobs, and "jobs" in the status).
type Snapshot struct {
	Active   *JobInfo  `json:"active,omitempty"`
	Queue    []JobInfo `json:"queue"`    // accepted jobs, in start order
	Finished []JobInfo `json:"finished"` // newest first, at most 50
	// Waiting says why the queue is not moving ("" when it is).
	Waiting   string `json:"waiting,omitempty"`
	BedClear  bool   `json:"bed_clear"`
	AutoStart bool   `json:"auto_start"`
	// JournalProblem says why the job journal cannot be written ("state
	// disk full: …"), "" when it can.
	JournalProblem string `json:"journal_problem,omitempty"`
}

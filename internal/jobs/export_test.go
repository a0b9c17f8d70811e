package jobs

// What the engine's acceptance tests need from inside the package. They are
// in package jobs_test because they run the production adapters (package
// jobs/adapters), which import this package.

type (
	Record   = record
	BedState = bedState
)

var (
	DisplayName = displayName
	SaveBed     = saveBed
)

const (
	BedWaitReason      = bedWaitReason
	DamagedRecord      = damagedRecord
	FlushRetryMax      = flushRetryMax
	LocalFailureWindow = localFailureWindow
)

// SetJournalWrite replaces the journal's file writer (disk-full tests where
// no tmpfs can be mounted).
func (e *Engine) SetJournalWrite(write func(name string, data []byte) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.write = write
}

// FlushArmed reports whether the loop has armed the journal's retry.
func (e *Engine) FlushArmed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.flushTimer != nil
}

// PrinterSeen is the printer's status as the engine last took it in.
func (e *Engine) PrinterSeen() PrinterStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// PrinterPort is the engine's Printer.
func (e *Engine) PrinterPort() Printer { return e.o.Printer }

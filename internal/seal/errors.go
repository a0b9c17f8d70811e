package seal

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. Store wraps them in an *UnsealError that
// adds the file, the backend and what the owner should do.
var (
	// ErrNoSealedKey: there is no blob yet (first start: generate and pair).
	ErrNoSealedKey = errors.New("no sealed printer key yet")
	// ErrExists: Create refuses to overwrite an existing blob.
	ErrExists = errors.New("a sealed printer key already exists")
	// ErrCorrupt: the blob or envelope is truncated, damaged or not ours.
	ErrCorrupt = errors.New("sealed key file is corrupt or truncated")
	// ErrUnsupportedVersion: sealed by a newer lmntd.
	ErrUnsupportedVersion = errors.New("sealed key file has an unsupported format version")
	// ErrTPMUnavailable: the blob needs a TPM this process cannot reach.
	ErrTPMUnavailable = errors.New("TPM not available")
	// ErrTPMCleared: the TPM cannot load the sealed object: it was cleared
	// (new owner seed), replaced, or the blob came from another machine.
	ErrTPMCleared = errors.New("the TPM no longer holds the key this blob was sealed under (TPM cleared or replaced)")
	// ErrTPMPolicy: the PCR values differ from when the key was sealed.
	ErrTPMPolicy = errors.New("the boot measurements (PCRs) differ from when the key was sealed")
	// ErrTPM: any other TPM failure.
	ErrTPM = errors.New("TPM command failed")
	// ErrBoardMismatch: the board identity differs (SD card in another board,
	// or an identity source vanished).
	ErrBoardMismatch = errors.New("sealed on a different board (board identity differs)")
	// ErrSoftwareKeyMissing: the software backend's key file is gone.
	ErrSoftwareKeyMissing = errors.New("the software sealing key file is missing")
	// ErrSoftwareKeyMismatch: a key file exists but is not the one the blob was sealed with.
	ErrSoftwareKeyMismatch = errors.New("the software sealing key file is not the one this blob was sealed with")
	// ErrSoftwareKeyInsecure: the key file is readable by others than its owner.
	ErrSoftwareKeyInsecure = errors.New("the software sealing key file is readable by other users")
	// ErrNoBoardIdentity: no identity source at all to bind the software key to.
	ErrNoBoardIdentity = errors.New("no board identity source readable (device-tree serial, SoC SID, DMI UUID, machine-id)")
)

// advice is what the owner should do, per failure.
var advice = []struct {
	err  error
	what string
}{
	{ErrTPMCleared, "the printer key cannot be recovered on this machine: re-pair with `lmnt pair`. If the wrong TPM is attached or the blob was copied from another printer, put things back instead. The old blob is kept."},
	{ErrTPMPolicy, "boot the firmware/kernel the key was sealed with, or re-pair with `lmnt pair` and consider sealing without PCRs. The old blob is kept."},
	{ErrTPMUnavailable, "check that the TPM is enabled (Raspberry Pi: dtoverlay=tpm-slb9670 in config.txt), that /dev/tpmrm0 exists, and that the service may open it (DeviceAllow= with PrivateDevices=, group tss). The old blob is kept."},
	{ErrBoardMismatch, "put this SD card/disk back into the board it was set up on, or re-pair with `lmnt pair` on this board. The old blob is kept."},
	{ErrSoftwareKeyMissing, "restore the key file from a backup of the state directory, or re-pair with `lmnt pair`. The old blob is kept."},
	{ErrSoftwareKeyMismatch, "restore the original key file from a backup of the state directory, or re-pair with `lmnt pair`. The old blob is kept."},
	{ErrSoftwareKeyInsecure, "make it private to the service user (chmod 600, owned by lmntd), then restart lmntd; if others may have read it, re-pair with `lmnt pair`."},
	{ErrCorrupt, "restore the state directory from a backup (a reseal leaves the previous blob as .bak), or re-pair with `lmnt pair`. The damaged file is kept."},
	{ErrUnsupportedVersion, "upgrade lmntd to the version that sealed this key."},
	{ErrNoBoardIdentity, "enable a TPM, or make /etc/machine-id exist (systemd-machine-id-setup)."},
	{ErrTPM, "see the TPM error; run `lmnt doctor`. The old blob is kept."},
}

// Advice returns what the owner should do about err, or "".
func Advice(err error) string {
	for _, a := range advice {
		if errors.Is(err, a.err) {
			return a.what
		}
	}
	return ""
}

// UnsealError is a failure to open (or reseal) the sealed key file. It
// matches its sentinel with errors.Is and reads as a full instruction.
type UnsealError struct {
	Path    string
	Backend Backend
	Err     error // the sentinel (ErrTPMCleared, ...)
	Detail  error // the underlying cause, may be nil
}

func (e *UnsealError) Error() string {
	msg := fmt.Sprintf("cannot unseal the printer key %s", e.Path)
	if e.Backend != "" {
		msg += fmt.Sprintf(" (sealed with %s)", e.Backend)
	}
	msg += ": " + e.Err.Error()
	if e.Detail != nil {
		msg += ": " + e.Detail.Error()
	}
	if a := Advice(e.Err); a != "" {
		msg += ". What to do: " + a
	}
	return msg
}

// Unwrap exposes the sentinel and the cause to errors.Is/As.
func (e *UnsealError) Unwrap() []error {
	if e.Detail == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Detail}
}

// classify wraps a backend error (fmt.Errorf("%w: detail", sentinel)) into an
// *UnsealError naming the file; errors without a sentinel (I/O) pass as Err.
func classify(path string, backend Backend, err error) error {
	if err == nil {
		return nil
	}
	for _, a := range advice {
		if errors.Is(err, a.err) {
			return &UnsealError{Path: path, Backend: backend, Err: a.err, Detail: stripSentinel(err, a.err)}
		}
	}
	return &UnsealError{Path: path, Backend: backend, Err: err}
}

// stripSentinel keeps the detail of "sentinel: detail" errors so the message
// does not repeat the sentinel's text.
func stripSentinel(err, sentinel error) error {
	if err == sentinel {
		return nil
	}
	return detailError{err: err, prefix: sentinel.Error() + ": "}
}

type detailError struct {
	err    error
	prefix string
}

func (d detailError) Error() string {
	s := d.err.Error()
	if len(s) >= len(d.prefix) && s[:len(d.prefix)] == d.prefix {
		return s[len(d.prefix):]
	}
	return s
}

func (d detailError) Unwrap() error { return d.err }

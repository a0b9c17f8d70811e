// Package seal keeps the printer's private key sealed at rest.
//
// A Sealer turns a small secret into a blob only this machine can open again:
//
//   - tpm: a TPM 2.0 (/dev/tpmrm0, then /dev/tpm0). A transient ECC P-256 SRK is
//     derived from the owner hierarchy; a KEYEDHASH object sealed under it
//     (NoDA, optionally bound to PCRs of the sha256 bank) holds a random
//     32-byte key; the secret is AES-256-GCM-encrypted with that key, the blob's
//     header as associated data. Parameter encryption (a session salted to the
//     SRK) keeps the 32-byte key off the SPI bus in clear. Clearing the TPM
//     changes the owner seed, so an old blob can never be loaded again.
//
//   - software: for boards without a TPM. A random 32-byte key file in the
//     state directory, readable only by the service user (0600), and a
//     key-encryption key derived with HKDF from that file and the board's
//     identity (hw: device-tree serial, Allwinner SID, DMI UUID; machine-id
//     only when the board has nothing better). An SD card moved to another
//     board does not unseal. It does NOT protect against: root (or the service
//     user) on the same board, who can read the key file and the serial; an
//     attacker who has the card and knows or guesses the board serial — a
//     Raspberry Pi serial has 32 unknown bits, little enough to brute-force;
//     an attacker who has the card and the board. Use a TPM where that matters.
//
// The key-file layer (Store) keeps one blob file in the state directory inside
// a small versioned JSON envelope that names the backend, written atomically
// (temp file, fsync, rename, directory fsync) with mode 0600. A blob that no
// longer unseals is a loud, specific error (errors.Is with ErrTPMCleared,
// ErrBoardMismatch, ErrCorrupt, ...) whose message tells the owner what to do.
// Nothing here ever replaces a key silently or deletes a blob: re-pairing
// retires the old blob under a new name.
package seal

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
)

// Backend names a sealing backend. The names are stored in envelopes.
type Backend string

// Backends.
const (
	BackendTPM      Backend = "tpm"
	BackendSoftware Backend = "software"
)

// Mode is the `seal` configuration key.
type Mode string

// Modes.
const (
	ModeAuto     Mode = "auto" // the TPM when one is present and works, else software
	ModeTPM      Mode = "tpm"
	ModeSoftware Mode = "software"
)

// ParseMode validates a `seal` configuration value ("" means auto).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeTPM, ModeSoftware:
		return m, nil
	}
	return "", fmt.Errorf("seal: unknown mode %q: want auto, tpm or software", s)
}

// Sealer seals small secrets (a 32-byte key) to this machine.
type Sealer interface {
	// Name is the backend, recorded in the envelope.
	Name() Backend
	// Seal returns a self-describing blob; it never writes the plaintext anywhere.
	Seal(plaintext []byte) ([]byte, error)
	// Unseal opens a blob made by Seal on this machine. The caller wipes the result.
	Unseal(blob []byte) ([]byte, error)
}

// Options configure selection and the key-file layer.
type Options struct {
	// Mode selects the backend for new blobs; existing blobs are always opened
	// with the backend their envelope names.
	Mode Mode
	// StateDir holds the blob (and the software backend's key file).
	StateDir string
	TPM      TPMOptions
	Software SoftwareOptions
	// Logger; nil discards.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// SoftwareKeyFileName is the software backend's key file in the state directory.
const SoftwareKeyFileName = "seal-software.key"

func (o Options) softwareOptions() SoftwareOptions {
	s := o.Software
	if s.KeyFile == "" {
		s.KeyFile = filepath.Join(o.StateDir, SoftwareKeyFileName)
	}
	if s.Logger == nil {
		s.Logger = o.logger()
	}
	return s
}

func (o Options) tpmOptions() TPMOptions {
	t := o.TPM
	if t.Logger == nil {
		t.Logger = o.logger()
	}
	return t
}

// Select returns the sealer for new blobs according to opts.Mode. In auto
// mode it probes the TPM (open, create the SRK, flush) and falls back to
// software, logging why.
func Select(opts Options) (Sealer, error) {
	log := opts.logger()
	switch opts.Mode {
	case ModeTPM:
		t := NewTPM(opts.tpmOptions())
		if err := t.Probe(); err != nil {
			return nil, err
		}
		return t, nil
	case ModeSoftware:
		return NewSoftware(opts.softwareOptions()), nil
	case ModeAuto, "":
		t := NewTPM(opts.tpmOptions())
		err := t.Probe()
		if err == nil {
			log.Info("sealing with the TPM", "mode", ModeAuto)
			return t, nil
		}
		log.Info("no usable TPM, sealing with the board-bound software key", "mode", ModeAuto, "reason", err)
		return NewSoftware(opts.softwareOptions()), nil
	}
	return nil, fmt.Errorf("seal: unknown mode %q: want auto, tpm or software", opts.Mode)
}

// sealerFor builds the backend that can open a blob, whatever the configured mode.
func sealerFor(b Backend, opts Options) (Sealer, error) {
	switch b {
	case BackendTPM:
		return NewTPM(opts.tpmOptions()), nil
	case BackendSoftware:
		return NewSoftware(opts.softwareOptions()), nil
	}
	return nil, fmt.Errorf("%w: unknown backend %q", ErrCorrupt, b)
}

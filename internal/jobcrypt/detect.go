package jobcrypt

import (
	"bytes"
	"errors"
	"fmt"
)

// Format is how a job body is encoded.
type Format int

const (
	// FormatCBC is raw AES-256-CBC/PKCS#7 ciphertext (the marketplace's).
	FormatCBC Format = iota + 1
	// FormatFernet is a Fernet token (legacy builds, local start-print).
	FormatFernet
	// FormatPlaintext is unencrypted G-code, to be proven by the gate.
	FormatPlaintext
)

func (f Format) String() string {
	switch f {
	case FormatCBC:
		return "AES-256-CBC"
	case FormatFernet:
		return "Fernet"
	case FormatPlaintext:
		return "plaintext"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// FernetPrefix is how every Fernet token of this era begins: Base64 of the
// version byte 0x80 and the top bytes of a 64-bit timestamp, which are zero.
const FernetPrefix = "gAAAAA"

// DetectPrefixLen is how many leading body bytes DetectFormat wants.
const DetectPrefixLen = len(FernetPrefix)

// Errors of DetectFormat.
var (
	ErrFernetNeedsKey = errors.New("jobcrypt: body is a Fernet token but the job carries no key")
	ErrFormatMismatch = errors.New("jobcrypt: the job's key does not fit its body")
	errUnknownDEKKind = errors.New("jobcrypt: unknown DEK kind")
)

// DetectFormat decides how to decrypt a body from its first bytes (at least
// DetectPrefixLen, fewer only if the body is that short) and the key the job
// carries (nil: none). Detect, don't guess:
//   - a raw AES-256 key means CBC: binary ciphertext may begin with anything;
//   - a Fernet key needs a body that begins like a Fernet token;
//   - without key material a Fernet-looking body is an error, anything else
//     is plaintext for the G-code gate to accept or reject.
func DetectFormat(prefix []byte, dek *DEK) (Format, error) {
	fernetBody := bytes.HasPrefix(prefix, []byte(FernetPrefix))
	switch {
	case dek == nil && fernetBody:
		return 0, ErrFernetNeedsKey
	case dek == nil:
		return FormatPlaintext, nil
	case dek.Kind == DEKAES256:
		return FormatCBC, nil
	case dek.Kind == DEKFernet && fernetBody:
		return FormatFernet, nil
	case dek.Kind == DEKFernet:
		return 0, fmt.Errorf("%w: a Fernet key, but the body does not begin with %q", ErrFormatMismatch, FernetPrefix)
	}
	return 0, fmt.Errorf("%w %d", errUnknownDEKKind, dek.Kind)
}

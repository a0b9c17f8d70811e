package jobcrypt

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/nacl/box"
)

// Errors of OpenDEKPackage. Each names the part of the package that is wrong;
// base64 failures come as *PackageBase64Error, which also matches
// ErrPackageBase64.
var (
	ErrPackageSegments    = errors.New("jobcrypt: DEK package is not three ':'-separated segments (ephemeral_pub:nonce:box)")
	ErrPackageBase64      = errors.New("jobcrypt: DEK package segment is not standard Base64")
	ErrEphemeralKeyLength = errors.New("jobcrypt: DEK package ephemeral public key is not 32 bytes")
	ErrNonceLength        = errors.New("jobcrypt: DEK package nonce is not 24 bytes")
	ErrPackageAuth        = errors.New("jobcrypt: DEK package did not authenticate (wrong printer key, or the package was altered)")
	ErrDEKLength          = errors.New("jobcrypt: DEK package plaintext is neither a 32-byte AES-256 key nor a 44-character Fernet key")
)

// PackageBase64Error says which segment of a DEK package failed to decode.
type PackageBase64Error struct {
	Segment string // SegmentEphemeralPublicKey, SegmentNonce or SegmentBox
	Err     error  // from encoding/base64
}

func (e *PackageBase64Error) Error() string {
	return fmt.Sprintf("jobcrypt: DEK package segment %s is not standard Base64: %v", e.Segment, e.Err)
}

func (e *PackageBase64Error) Unwrap() error        { return e.Err }
func (e *PackageBase64Error) Is(target error) bool { return target == ErrPackageBase64 }

// The segments of a DEK package, as PackageBase64Error names them.
const (
	SegmentEphemeralPublicKey = "ephemeral_public_key"
	SegmentNonce              = "nonce"
	SegmentBox                = "box"
)

// DEKKind says what an opened DEK package contained.
type DEKKind int

const (
	// DEKAES256 is a raw 32-byte key for the AES-256-CBC body (the marketplace's format).
	DEKAES256 DEKKind = iota + 1
	// DEKFernet is a 44-character Fernet key: the body is a Fernet token.
	DEKFernet
)

func (k DEKKind) String() string {
	switch k {
	case DEKAES256:
		return "AES-256 key"
	case DEKFernet:
		return "Fernet key"
	}
	return fmt.Sprintf("DEKKind(%d)", int(k))
}

// DEK is the content key of one job. Exactly one of AES256 and Fernet is
// meaningful, as Kind says. Call Zero when the job's body is decrypted.
type DEK struct {
	Kind   DEKKind
	AES256 [32]byte
	Fernet FernetKey
}

// Zero overwrites the key material.
func (d *DEK) Zero() {
	if d == nil {
		return
	}
	clear(d.AES256[:])
	d.Fernet.Zero()
}

// AESKey returns a DEK holding a raw AES-256 key (a copy of key).
func AESKey(key *[32]byte) *DEK { return &DEK{Kind: DEKAES256, AES256: *key} }

// FernetDEK returns a DEK holding a Fernet key.
func FernetDEK(key *FernetKey) *DEK { return &DEK{Kind: DEKFernet, Fernet: *key} }

const (
	boxKeySize   = 32
	boxNonceSize = 24
)

// OpenDEKPackage opens a marketplace DEK package,
// B64(ephemeral_pub) ":" B64(nonce) ":" B64(box) in standard Base64, a NaCl
// crypto_box to the printer's X25519 private key priv. The plaintext must be
// a 32-byte AES-256 key or a 44-character Fernet key; the result's Kind says
// which. priv is only read; the caller keeps ownership (and zeroises it).
func OpenDEKPackage(pkg string, priv *[32]byte) (*DEK, error) {
	segs := strings.Split(pkg, ":")
	if len(segs) != 3 {
		return nil, fmt.Errorf("%w: found %d", ErrPackageSegments, len(segs))
	}
	names := [3]string{SegmentEphemeralPublicKey, SegmentNonce, SegmentBox}
	var raw [3][]byte
	for i, s := range segs {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, &PackageBase64Error{Segment: names[i], Err: err}
		}
		raw[i] = b
	}
	if len(raw[0]) != boxKeySize {
		return nil, fmt.Errorf("%w: got %d", ErrEphemeralKeyLength, len(raw[0]))
	}
	if len(raw[1]) != boxNonceSize {
		return nil, fmt.Errorf("%w: got %d", ErrNonceLength, len(raw[1]))
	}
	var peer [boxKeySize]byte
	var nonce [boxNonceSize]byte
	copy(peer[:], raw[0])
	copy(nonce[:], raw[1])
	plain, ok := box.Open(nil, raw[2], &nonce, &peer, priv)
	if !ok {
		return nil, ErrPackageAuth
	}
	defer clear(plain)
	switch len(plain) {
	case 32:
		d := &DEK{Kind: DEKAES256}
		copy(d.AES256[:], plain)
		return d, nil
	case fernetKeyEncodedLen:
		k, err := parseFernetKeyBytes(plain)
		if err != nil {
			return nil, fmt.Errorf("%w: 44-byte plaintext is not a Fernet key: %w", ErrDEKLength, err)
		}
		d := &DEK{Kind: DEKFernet, Fernet: *k}
		k.Zero()
		return d, nil
	}
	return nil, fmt.Errorf("%w: got %d bytes", ErrDEKLength, len(plain))
}

package seal

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// KeyFileName is the sealed printer key in the state directory.
const KeyFileName = "printer-key.sealed"

const (
	envelopeFormat  = "lmntd-sealed-key"
	envelopeVersion = 1
)

// Info is the envelope's public part: readable without unsealing.
type Info struct {
	Version  int       `json:"version"`
	Backend  Backend   `json:"backend"`
	KeyID    string    `json:"key_id,omitempty"` // public id of the sealed key, for diagnostics
	SealedAt time.Time `json:"sealed_at"`
}

// envelope is the file format. BlobSHA256 tells accidental damage (truncated
// write, bit rot) apart from a TPM or board that no longer matches: the
// backends' own checks would otherwise see both as "does not open".
type envelope struct {
	Format string `json:"format"`
	Info
	BlobSHA256 string `json:"blob_sha256"`
	Blob       []byte `json:"blob"`
}

// Store is the sealed key file in the state directory.
type Store struct {
	opts   Options
	path   string
	sealer Sealer // for new blobs
	log    *slog.Logger
}

// OpenStore selects the sealer for new blobs (see Select) and returns the
// store for <StateDir>/printer-key.sealed. It does not read the blob.
func OpenStore(opts Options) (*Store, error) {
	if opts.StateDir == "" {
		return nil, errors.New("seal: no state directory")
	}
	sealer, err := Select(opts)
	if err != nil {
		return nil, err
	}
	return &Store{opts: opts, path: filepath.Join(opts.StateDir, KeyFileName), sealer: sealer, log: opts.logger()}, nil
}

// Path is the sealed key file.
func (s *Store) Path() string { return s.path }

// Sealer is the backend new blobs are sealed with.
func (s *Store) Sealer() Sealer { return s.sealer }

// Create seals secret (the printer's private key; keyID its public id) into
// a new key file. It refuses to replace an existing file (ErrExists), readable
// or not: use Retire first when re-pairing.
func (s *Store) Create(secret []byte, keyID string) error {
	if _, err := os.Lstat(s.path); err == nil {
		return fmt.Errorf("seal: %s: %w", s.path, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data, err := s.sealEnvelope(s.sealer, secret, keyID)
	if err != nil {
		return err
	}
	if err := s.verify(s.sealer, data, secret); err != nil {
		return err
	}
	if err := atomicfile.Create(s.path, data); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("seal: %s: %w", s.path, ErrExists)
		}
		return fmt.Errorf("seal: writing %s: %w", s.path, err)
	}
	s.log.Info("printer key sealed", "path", s.path, "backend", s.sealer.Name(), "key_id", keyID)
	return nil
}

// Info reads the envelope without unsealing.
func (s *Store) Info() (Info, error) {
	env, err := s.read()
	if err != nil {
		return Info{}, err
	}
	return env.Info, nil
}

// Load unseals the key file with the backend its envelope names. The caller
// wipes the returned secret. ErrNoSealedKey means there is none yet; every
// other error means there is one that must not be replaced silently.
func (s *Store) Load() ([]byte, Info, error) {
	env, err := s.read()
	if err != nil {
		return nil, Info{}, err
	}
	if env.Backend != s.sealer.Name() {
		s.log.Warn("the printer key is sealed with another backend than configured; run `lmnt keys reseal` to move it",
			"sealed_with", env.Backend, "configured", s.sealer.Name())
	}
	backend, err := sealerFor(env.Backend, s.opts)
	if err != nil {
		return nil, Info{}, classify(s.path, env.Backend, err)
	}
	plain, err := backend.Unseal(env.Blob)
	if err != nil {
		err = classify(s.path, env.Backend, err)
		s.log.Error("printer key does not unseal", "path", s.path, "backend", env.Backend, "key_id", env.KeyID, "err", err)
		return nil, Info{}, err
	}
	return plain, env.Info, nil
}

// Reseal moves the key to the configured backend (`lmnt keys reseal`): unseal
// with the old backend, seal with the new one, verify the new blob opens to
// the same secret, then replace the file atomically. The old file stays as
// <file>.bak until the replacement has been read back and verified from disk;
// on any failure the old file is what remains.
func (s *Store) Reseal() (Info, error) {
	old, err := s.read()
	if err != nil {
		return Info{}, err
	}
	backend, err := sealerFor(old.Backend, s.opts)
	if err != nil {
		return Info{}, classify(s.path, old.Backend, err)
	}
	secret, err := backend.Unseal(old.Blob)
	if err != nil {
		return Info{}, classify(s.path, old.Backend, err)
	}
	defer clear(secret)
	data, err := s.sealEnvelope(s.sealer, secret, old.KeyID)
	if err != nil {
		return Info{}, err
	}
	if err := s.verify(s.sealer, data, secret); err != nil {
		return Info{}, err
	}
	bak := s.path + ".bak"
	if _, err := os.Lstat(bak); err == nil {
		return Info{}, fmt.Errorf("seal: %s exists from an earlier reseal; check which file unseals (`lmnt keys status`) and move the other aside before resealing", bak)
	}
	if err := os.Link(s.path, bak); err != nil {
		return Info{}, fmt.Errorf("seal: keeping the old blob as %s: %w", bak, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return Info{}, err
	}
	restore := func(cause error) error {
		if rerr := os.Rename(bak, s.path); rerr != nil {
			return fmt.Errorf("seal: reseal failed (%v) and restoring %s failed too (%v): the old blob is %s", cause, s.path, rerr, bak)
		}
		_ = atomicfile.SyncDir(filepath.Dir(s.path))
		return fmt.Errorf("seal: reseal failed, the old blob is back in place: %w", cause)
	}
	if err := atomicfile.Write(s.path, data); err != nil {
		return Info{}, restore(err)
	}
	onDisk, err := os.ReadFile(s.path)
	if err == nil {
		err = s.verify(s.sealer, onDisk, secret)
	}
	if err != nil {
		return Info{}, restore(err)
	}
	// Verified: drop the old blob. Keeping a software-sealed copy next to a
	// TPM-sealed one would keep the weaker protection alive.
	if err := os.Remove(bak); err != nil {
		s.log.Warn("resealed, but the previous blob could not be removed", "path", bak, "err", err)
	}
	_ = atomicfile.SyncDir(filepath.Dir(s.path))
	env, _ := decodeEnvelope(s.path, data)
	s.log.Info("printer key resealed", "from", old.Backend, "to", env.Backend, "key_id", env.KeyID)
	return env.Info, nil
}

// Retire moves the key file aside (never deletes it) so that a new key can be
// created when the owner re-pairs; it returns the new name.
func (s *Store) Retire() (string, error) {
	dst := fmt.Sprintf("%s.retired-%s", s.path, time.Now().UTC().Format("20060102T150405Z"))
	if _, err := os.Lstat(dst); err == nil {
		return "", fmt.Errorf("seal: %s already exists", dst)
	}
	if err := os.Rename(s.path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("seal: %s: %w", s.path, ErrNoSealedKey)
		}
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return "", err
	}
	s.log.Warn("sealed printer key retired", "path", dst)
	return dst, nil
}

func (s *Store) sealEnvelope(sealer Sealer, secret []byte, keyID string) ([]byte, error) {
	blob, err := sealer.Seal(secret)
	if err != nil {
		return nil, fmt.Errorf("seal: sealing with %s: %w", sealer.Name(), err)
	}
	sum := sha256.Sum256(blob)
	env := envelope{
		Format:     envelopeFormat,
		Info:       Info{Version: envelopeVersion, Backend: sealer.Name(), KeyID: keyID, SealedAt: time.Now().UTC().Truncate(time.Second)},
		BlobSHA256: hex.EncodeToString(sum[:]),
		Blob:       blob,
	}
	data, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// verify checks that an encoded envelope unseals to secret.
func (s *Store) verify(sealer Sealer, data, secret []byte) error {
	env, err := decodeEnvelope(s.path, data)
	if err != nil {
		return err
	}
	got, err := sealer.Unseal(env.Blob)
	if err != nil {
		return fmt.Errorf("seal: the new %s blob does not unseal: %w", sealer.Name(), err)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, secret) != 1 {
		return fmt.Errorf("seal: the new %s blob unseals to a different secret", sealer.Name())
	}
	return nil
}

func (s *Store) read() (*envelope, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("seal: %s: %w", s.path, ErrNoSealedKey)
	}
	if err != nil {
		return nil, fmt.Errorf("seal: reading %s: %w", s.path, err)
	}
	return decodeEnvelope(s.path, data)
}

func decodeEnvelope(path string, data []byte) (*envelope, error) {
	// Format and version first, leniently: a newer lmntd may add fields.
	var head struct {
		Format  string  `json:"format"`
		Version int     `json:"version"`
		Backend Backend `json:"backend"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, classify(path, "", fmt.Errorf("%w: envelope: %v", ErrCorrupt, err))
	}
	if head.Format != envelopeFormat {
		return nil, classify(path, "", fmt.Errorf("%w: format %q is not %q", ErrCorrupt, head.Format, envelopeFormat))
	}
	if head.Version != envelopeVersion {
		return nil, classify(path, head.Backend, fmt.Errorf("%w: version %d (this lmntd reads %d)", ErrUnsupportedVersion, head.Version, envelopeVersion))
	}
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, classify(path, head.Backend, fmt.Errorf("%w: envelope: %v", ErrCorrupt, err))
	}
	sum := sha256.Sum256(env.Blob)
	if hex.EncodeToString(sum[:]) != env.BlobSHA256 {
		return nil, classify(path, env.Backend, fmt.Errorf("%w: blob checksum mismatch (%d bytes)", ErrCorrupt, len(env.Blob)))
	}
	return &env, nil
}

package seal

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"syscall"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
	"github.com/lmnt-marketplace/lmntd/internal/hw"
)

// SoftwareOptions configure the software backend.
type SoftwareOptions struct {
	// KeyFile is the random key file (default <StateDir>/seal-software.key).
	KeyFile string
	// Host is where the board identity is read (hw.Paths{} = this host).
	Host hw.Paths
	// Logger; nil discards.
	Logger *slog.Logger
}

// SoftwareSealer binds secrets to a key file and the board identity. See the
// package documentation for what it does and does not protect against.
type SoftwareSealer struct {
	opts SoftwareOptions
	log  *slog.Logger
}

// NewSoftware returns the software backend.
func NewSoftware(opts SoftwareOptions) *SoftwareSealer {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SoftwareSealer{opts: opts, log: log}
}

// Name implements Sealer.
func (s *SoftwareSealer) Name() Backend { return BackendSoftware }

const (
	softwareKeySize  = 32
	softwareSaltSize = 32
	keyFileIDSize    = 8
	sourceCheckSize  = 16
	softwareKDFLabel = "lmntd seal software v1"
)

// Seal binds plaintext to the key file (created on first use) and the board's
// most specific identity source.
func (s *SoftwareSealer) Seal(plaintext []byte) ([]byte, error) {
	sources, err := s.bindingSources()
	if err != nil {
		return nil, err
	}
	keyFile, err := s.keyFile(true)
	if err != nil {
		return nil, err
	}
	defer clear(keyFile)
	salt := make([]byte, softwareSaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, keyFile, salt)
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	w := newBlobWriter(blobTagSoftware)
	w.raw(salt)
	w.raw(keyFileID(keyFile))
	w.u8(byte(len(sources)))
	for _, src := range sources {
		check, err := sourceCheck(prk, src)
		if err != nil {
			return nil, err
		}
		w.bytes8([]byte(src.Name))
		w.raw(check)
	}
	kek, err := kekFor(prk, sources)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	return w.seal(kek, plaintext)
}

// Unseal re-derives the KEK from the key file and the identity sources the
// blob names, telling apart a missing or different key file, a different
// board, and a damaged blob.
func (s *SoftwareSealer) Unseal(blob []byte) ([]byte, error) {
	r, err := newBlobReader(blob, blobTagSoftware)
	if err != nil {
		return nil, err
	}
	salt := r.raw(softwareSaltSize)
	wantKeyFileID := r.raw(keyFileIDSize)
	n := int(r.u8())
	type recorded struct {
		name  hw.SourceName
		check []byte
	}
	var rec []recorded
	for i := 0; i < n && r.err == nil; i++ {
		name := r.bytes8()
		rec = append(rec, recorded{hw.SourceName(name), r.raw(sourceCheckSize)})
	}
	if r.err != nil {
		return nil, r.err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no identity source recorded", ErrCorrupt)
	}
	keyFile, err := s.keyFile(false)
	if err != nil {
		return nil, err
	}
	defer clear(keyFile)
	if subtle.ConstantTimeCompare(keyFileID(keyFile), wantKeyFileID) != 1 {
		return nil, fmt.Errorf("%w: %s", ErrSoftwareKeyMismatch, s.opts.KeyFile)
	}
	prk, err := hkdf.Extract(sha256.New, keyFile, salt)
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	sources := make([]hw.IdentitySource, 0, len(rec))
	for _, r := range rec {
		v, err := hw.ReadIdentitySource(s.opts.Host, r.name)
		if err != nil {
			return nil, fmt.Errorf("%w: the key is bound to %s, which this board does not provide: %v", ErrBoardMismatch, r.name, err)
		}
		src := hw.IdentitySource{Name: r.name, Value: v}
		check, err := sourceCheck(prk, src)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(check, r.check) != 1 {
			return nil, fmt.Errorf("%w: %s differs from the board the key was sealed on", ErrBoardMismatch, r.name)
		}
		sources = append(sources, src)
	}
	kek, err := kekFor(prk, sources)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	plain, ok, err := r.open(kek)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: authentication failed although key file and board match", ErrCorrupt)
	}
	return plain, nil
}

// bindingSources picks what to bind to: the board's most specific
// hardware-bound source, else machine-id (logged: it travels with the card).
func (s *SoftwareSealer) bindingSources() ([]hw.IdentitySource, error) {
	board, err := hw.Detect(s.opts.Host)
	if err != nil {
		s.log.Warn("board not recognised; trying generic identity sources", "err", err)
	}
	found, problems := hw.ReadIdentity(s.opts.Host, board)
	for _, p := range problems {
		if !errors.Is(p, hw.ErrSourceAbsent) {
			s.log.Info("identity source not usable", "err", p)
		}
	}
	for _, src := range found {
		if src.Name.HardwareBound() {
			s.log.Info("software seal bound to the board", "board", board.Kind, "source", src.Name)
			return []hw.IdentitySource{src}, nil
		}
	}
	for _, src := range found {
		if src.Name == hw.SourceMachineID {
			s.log.Warn("no board-unique identity readable: the software seal binds to /etc/machine-id only, which a copied SD card carries along; use a TPM",
				"board", board.Kind)
			return []hw.IdentitySource{src}, nil
		}
	}
	return nil, ErrNoBoardIdentity
}

// keyFile reads the key file, creating it when create is set and it does not
// exist. It refuses a file others can read or that someone else owns.
func (s *SoftwareSealer) keyFile(create bool) ([]byte, error) {
	path := s.opts.KeyFile
	if path == "" {
		return nil, errors.New("seal: software backend without a key file path")
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("%w: %s", ErrSoftwareKeyMissing, path)
		}
		key := make([]byte, softwareKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := atomicfile.Create(path, key); err != nil {
			clear(key)
			if errors.Is(err, fs.ErrExist) {
				return s.keyFile(false) // another process won the race; use its file
			}
			return nil, fmt.Errorf("seal: creating software key file: %w", err)
		}
		s.log.Info("software sealing key file created", "path", path)
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("seal: opening software key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v", ErrSoftwareKeyInsecure, path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%w: %s is owned by uid %d, not %d", ErrSoftwareKeyInsecure, path, st.Uid, os.Geteuid())
	}
	buf := make([]byte, softwareKeySize+1)
	n, _ := f.Read(buf)
	if n != softwareKeySize {
		clear(buf)
		return nil, fmt.Errorf("%w: software key file %s is %d bytes, want %d", ErrCorrupt, path, fi.Size(), softwareKeySize)
	}
	return buf[:softwareKeySize], nil
}

// keyFileID identifies a key file without revealing it.
func keyFileID(key []byte) []byte {
	h := sha256.New()
	h.Write([]byte(softwareKDFLabel + " key file id\x00"))
	h.Write(key)
	return h.Sum(nil)[:keyFileIDSize]
}

// sourceCheck lets Unseal say which identity source changed. It is derived
// from the key file too, so it tells nothing to someone without the key file.
func sourceCheck(prk []byte, src hw.IdentitySource) ([]byte, error) {
	return hkdf.Expand(sha256.New, prk, softwareKDFLabel+" check\x00"+string(src.Name)+"\x00"+string(src.Value), sourceCheckSize)
}

func kekFor(prk []byte, sources []hw.IdentitySource) ([]byte, error) {
	var info bytes.Buffer
	info.WriteString(softwareKDFLabel + " kek")
	for _, src := range sources {
		info.WriteByte(0)
		info.WriteString(string(src.Name))
		info.WriteByte(0)
		info.Write(src.Value)
	}
	return hkdf.Expand(sha256.New, prk, info.String(), 32)
}

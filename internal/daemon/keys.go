package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/hw"
	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/seal"
)

// Key states as Status reports them.
const (
	keyOK      = "ok"
	keyMissing = "missing"
	keyBroken  = "broken"
)

// keyring holds the printer key. A key that does not unseal is an expected
// state, not a crash: the daemon keeps serving status and pairing and never
// replaces the key on its own. Only an explicit request (pairing again,
// importing the old plugin's key) retires the sealed blob (it is kept under
// a new name) and seals another key.
type keyring struct {
	opts seal.Options
	log  *slog.Logger

	mu    sync.RWMutex // readers use the key; writers replace it
	store *seal.Store
	key   *identity.Key
	info  seal.Info
	err   error // why the key is unusable (state broken)
}

func sealOptions(cfg *config.Config, hostRoot string, log *slog.Logger, mode seal.Mode) seal.Options {
	pcrs := make([]uint, 0, len(cfg.Seal.TPMPCRs))
	for _, p := range cfg.Seal.TPMPCRs {
		pcrs = append(pcrs, uint(p))
	}
	return seal.Options{
		Mode:     mode,
		StateDir: cfg.Paths.StateDirectory,
		TPM:      seal.TPMOptions{Devices: []string{cfg.Seal.TPMDevice}, PCRs: pcrs, Logger: log},
		Software: seal.SoftwareOptions{Host: hw.Paths{Root: hostRoot}, Logger: log},
		Logger:   log,
	}
}

// openKeyring unseals the printer key, or makes and seals a new one on the
// very first start (no sealed key at all).
func openKeyring(opts seal.Options, log *slog.Logger) (*keyring, error) {
	store, err := seal.OpenStore(opts)
	if err != nil {
		return nil, fmt.Errorf("seal.backend %s: %w", opts.Mode, err)
	}
	kr := &keyring{opts: opts, log: log, store: store}
	plain, info, err := store.Load()
	switch {
	case err == nil:
		k, kerr := identity.FromPrivate(plain)
		clear(plain)
		if kerr != nil {
			kr.err = &seal.UnsealError{Path: store.Path(), Backend: info.Backend, Err: seal.ErrCorrupt, Detail: kerr}
			return kr, nil
		}
		kr.key, kr.info = k, info
		log.Info("printer key unsealed", "key_id", k.KeyID(), "backend", info.Backend)
	case errors.Is(err, seal.ErrNoSealedKey):
		if err := kr.generateLocked(); err != nil {
			return nil, err
		}
	default:
		kr.err = err
		log.Error("the printer key does not unseal; serving status and pairing only", "err", err)
	}
	return kr, nil
}

// generateLocked makes a new key and seals it (there must be no blob).
func (kr *keyring) generateLocked() error {
	k, err := identity.Generate()
	if err != nil {
		return err
	}
	if err := kr.store.Create(k.Private()[:], k.KeyID()); err != nil {
		k.Zero()
		return fmt.Errorf("sealing the new printer key: %w", err)
	}
	info, err := kr.store.Info()
	if err != nil {
		k.Zero()
		return err
	}
	kr.key, kr.info, kr.err = k, info, nil
	kr.log.Info("new printer key generated and sealed", "key_id", k.KeyID(), "backend", info.Backend)
	return nil
}

// replaceLocked retires the current blob (kept for diagnosis) and seals k.
func (kr *keyring) replaceLocked(k *identity.Key) error {
	if _, err := os.Lstat(kr.store.Path()); err == nil {
		if _, err := kr.store.Retire(); err != nil {
			return fmt.Errorf("retiring the old sealed key: %w", err)
		}
	}
	if err := kr.store.Create(k.Private()[:], k.KeyID()); err != nil {
		return fmt.Errorf("sealing the key: %w", err)
	}
	info, err := kr.store.Info()
	if err != nil {
		return err
	}
	if kr.key != nil {
		kr.key.Zero()
	}
	kr.key, kr.info, kr.err = k, info, nil
	return nil
}

// renewIfBroken seals a fresh key when the old one cannot be unsealed: the
// owner asked to pair again, which is what every unseal error advises.
func (kr *keyring) renewIfBroken() error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if kr.key != nil {
		return nil
	}
	kr.log.Warn("pairing again with a new printer key; the old sealed key is kept aside", "old_problem", kr.err)
	k, err := identity.Generate()
	if err != nil {
		return err
	}
	if err := kr.replaceLocked(k); err != nil {
		k.Zero()
		return err
	}
	return nil
}

// with runs f with the key held (it cannot be replaced or wiped meanwhile).
func (kr *keyring) with(f func(k *identity.Key) error) error {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	if kr.key == nil {
		return kr.unusableLocked()
	}
	return f(kr.key)
}

func (kr *keyring) unusableLocked() error {
	if kr.err != nil {
		return fmt.Errorf("sealed key does not unseal: %w", kr.err)
	}
	return errors.New("no printer key")
}

// state describes the key for Status (public parts only).
func (kr *keyring) state() (state, keyID, backend, problem, advice string, pub string, sealedAt time.Time) {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	switch {
	case kr.key != nil:
		return keyOK, kr.key.KeyID(), string(kr.info.Backend), "", "", kr.key.PublicKeyBase64(), kr.info.SealedAt
	case kr.err != nil:
		info, _ := kr.store.Info()
		return keyBroken, info.KeyID, string(info.Backend), kr.err.Error(), seal.Advice(kr.err), "", info.SealedAt
	}
	return keyMissing, "", "", "no printer key", "", "", time.Time{}
}

func (kr *keyring) configuredBackend() string {
	return string(kr.store.Sealer().Name())
}

// reseal moves the sealed key to backend to.
func (kr *keyring) reseal(to seal.Mode) (seal.Info, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if kr.key == nil {
		return seal.Info{}, kr.unusableLocked()
	}
	opts := kr.opts
	opts.Mode = to
	store, err := seal.OpenStore(opts)
	if err != nil {
		return seal.Info{}, err
	}
	info, err := store.Reseal()
	if err != nil {
		return seal.Info{}, err
	}
	kr.store, kr.info, kr.opts = store, info, opts
	kr.log.Info("printer key resealed", "backend", info.Backend, "key_id", info.KeyID)
	return info, nil
}

func (kr *keyring) zero() {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if kr.key != nil {
		kr.key.Zero()
		kr.key = nil
	}
}

// boxOpener opens the marketplace's sealed pairing answer with the key.
type boxOpener struct{ kr *keyring }

func (b boxOpener) OpenBox(ciphertext, nonce, senderPub []byte) ([]byte, error) {
	if len(nonce) != 24 || len(senderPub) != 32 {
		return nil, fmt.Errorf("sealed answer: nonce of %d bytes and sender key of %d bytes, want 24 and 32", len(nonce), len(senderPub))
	}
	var n [24]byte
	var pub [32]byte
	copy(n[:], nonce)
	copy(pub[:], senderPub)
	var out []byte
	err := b.kr.with(func(k *identity.Key) error {
		var ok bool
		out, ok = box.Open(nil, ciphertext, &n, &pub, k.Private())
		if !ok {
			return errors.New("sealed answer does not open with the printer key")
		}
		return nil
	})
	return out, err
}

// legacyDir is where the old plugin kept its files: <printer_data>/lmnt_marketplace.
func legacyDir(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(filepath.Dir(cfg.Klipper.ConfigFile)), "lmnt_marketplace")
}

// wipeFile overwrites a file with zeros, syncs it and removes it: the old
// plugin's clear-text key files must not linger in free blocks more than
// the filesystem makes unavoidable.
func wipeFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		zeros := make([]byte, 4096)
		for left := fi.Size(); left > 0 && err == nil; left -= int64(len(zeros)) {
			_, err = f.Write(zeros[:min(left, int64(len(zeros)))])
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Remove(path)
}

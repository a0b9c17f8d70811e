package seal

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultTPMDevices are tried in order: the kernel resource manager first
// (it flushes what a crashed process leaves behind and lets tpm2-abrmd-free
// tools share the TPM), then the raw device.
var DefaultTPMDevices = []string{"/dev/tpmrm0", "/dev/tpm0"}

// TPMOptions configure the TPM backend.
type TPMOptions struct {
	// Devices to try in order (default DefaultTPMDevices).
	Devices []string
	// Open overrides Devices: tests connect to swtpm over TCP with it.
	Open func() (transport.TPMCloser, error)
	// PCRs, if set, bind the sealed key to these PCRs of the sha256 bank at
	// seal time: a different firmware, boot loader or kernel then fails to
	// unseal (ErrTPMPolicy). Empty: no PCR policy (the default; Raspberry Pi
	// firmware does not measure the boot, so PCRs there say nothing).
	PCRs []uint
	// Logger; nil discards.
	Logger *slog.Logger
}

// TPMSealer seals with a TPM 2.0.
type TPMSealer struct {
	opts TPMOptions
	log  *slog.Logger
}

// NewTPM returns the TPM backend; nothing is opened until used.
func NewTPM(opts TPMOptions) *TPMSealer {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(opts.Devices) == 0 {
		opts.Devices = DefaultTPMDevices
	}
	opts.PCRs = slices.Sorted(slices.Values(opts.PCRs))
	opts.PCRs = slices.Compact(opts.PCRs)
	return &TPMSealer{opts: opts, log: log}
}

// Name implements Sealer.
func (s *TPMSealer) Name() Backend { return BackendTPM }

const (
	tpmKeySize = 32
	maxPCR     = 23 // PC Client TPMs have 24 PCRs
)

func (s *TPMSealer) open() (transport.TPMCloser, error) {
	if s.opts.Open != nil {
		t, err := s.opts.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTPMUnavailable, err)
		}
		return t, nil
	}
	var errs []string
	for _, dev := range s.opts.Devices {
		t, err := linuxtpm.Open(dev)
		if err == nil {
			return t, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("%w: %s", ErrTPMUnavailable, strings.Join(errs, "; "))
}

// Probe checks the TPM is reachable and can create the SRK.
func (s *TPMSealer) Probe() error {
	t, err := s.open()
	if err != nil {
		return err
	}
	defer t.Close()
	return s.withSRK(t, func(srk srkHandle) error { return nil })
}

// srkHandle is the loaded SRK with what sessions salted to it need.
type srkHandle struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
}

func (h srkHandle) auth(dir tpm2.AuthOption) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: h.handle, Name: h.name, Auth: h.session(dir)}
}

// session is a one-use HMAC session salted to the SRK that encrypts the
// sensitive parameter (the sealed key) in the given direction, so it never
// crosses the SPI/LPC bus in clear.
func (h srkHandle) session(dir tpm2.AuthOption) tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, dir, tpm2.Salted(h.handle, h.public))
}

// withSRK creates the standard ECC P-256 SRK in the owner hierarchy as a
// transient object (the same seed always yields the same key), runs fn, and
// flushes it.
func (s *TPMSealer) withSRK(t transport.TPM, fn func(srkHandle) error) error {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return fmt.Errorf("%w: the owner hierarchy has a password; lmntd needs an empty owner auth: %v", ErrTPMUnavailable, err)
		}
		return fmt.Errorf("%w: creating the SRK: %v", ErrTPMUnavailable, err)
	}
	defer s.flush(t, rsp.ObjectHandle, "SRK")
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("%w: SRK public: %v", ErrTPM, err)
	}
	return fn(srkHandle{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub})
}

func (s *TPMSealer) flush(t transport.TPM, h tpm2.TPMHandle, what string) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t); err != nil {
		s.log.Warn("TPM: flushing context failed", "object", what, "err", err)
	}
}

func (s *TPMSealer) pcrSelection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(s.opts.PCRs...),
	}}}
}

// policyDigest computes the PolicyPCR digest over the current PCR values in a
// trial session.
func (s *TPMSealer) policyDigest(t transport.TPM) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, fmt.Errorf("%w: trial policy session: %v", ErrTPM, err)
	}
	defer func() {
		if err := closeSess(); err != nil {
			s.log.Warn("TPM: closing trial session failed", "err", err)
		}
	}()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: s.pcrSelection()}).Execute(t); err != nil {
		return nil, fmt.Errorf("%w: PolicyPCR: %v", ErrTPM, err)
	}
	rsp, err := (tpm2.PolicyGetDigest{PolicySession: sess.Handle()}).Execute(t)
	if err != nil {
		return nil, fmt.Errorf("%w: PolicyGetDigest: %v", ErrTPM, err)
	}
	return rsp.PolicyDigest.Buffer, nil
}

// Seal creates a sealed object holding a fresh random key and encrypts
// plaintext with it. Blob layout after the common header:
//
//	pcr_count u8 | pcr indices... | public (u16-sized) | private (u16-sized) | nonce | ciphertext
func (s *TPMSealer) Seal(plaintext []byte) ([]byte, error) {
	for _, p := range s.opts.PCRs {
		if p > maxPCR {
			return nil, fmt.Errorf("seal: PCR %d out of range 0-%d", p, maxPCR)
		}
	}
	key := make([]byte, tpmKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	t, err := s.open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var pub, priv []byte
	err = s.withSRK(t, func(srk srkHandle) error {
		attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true, UserWithAuth: true}
		var policy []byte
		if len(s.opts.PCRs) > 0 {
			if policy, err = s.policyDigest(t); err != nil {
				return err
			}
			attrs.UserWithAuth = false // only the PCR policy can unseal
		}
		rsp, err := tpm2.Create{
			ParentHandle: srk.auth(tpm2.AESEncryption(128, tpm2.EncryptIn)),
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: key}),
			}},
			InPublic: tpm2.New2B(tpm2.TPMTPublic{
				Type:             tpm2.TPMAlgKeyedHash,
				NameAlg:          tpm2.TPMAlgSHA256,
				ObjectAttributes: attrs,
				AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
			}),
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("%w: creating the sealed object: %v", ErrTPM, err)
		}
		pub, priv = rsp.OutPublic.Bytes(), rsp.OutPrivate.Buffer
		return nil
	})
	if err != nil {
		return nil, err
	}
	w := newBlobWriter(blobTagTPM)
	w.u8(byte(len(s.opts.PCRs)))
	for _, p := range s.opts.PCRs {
		w.u8(byte(p))
	}
	w.bytes16(pub)
	w.bytes16(priv)
	return w.seal(key, plaintext)
}

// Unseal loads the sealed object under the SRK, unseals the key (through the
// PCR policy if the blob has one) and decrypts.
func (s *TPMSealer) Unseal(blob []byte) ([]byte, error) {
	r, err := newBlobReader(blob, blobTagTPM)
	if err != nil {
		return nil, err
	}
	pcrs := make([]uint, r.u8())
	for i := range pcrs {
		pcrs[i] = uint(r.u8())
	}
	pub, priv := r.bytes16(), r.bytes16()
	if r.err != nil {
		return nil, r.err
	}
	for _, p := range pcrs {
		if p > maxPCR {
			return nil, fmt.Errorf("%w: PCR %d out of range", ErrCorrupt, p)
		}
	}
	t, err := s.open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var key []byte
	err = s.withSRK(t, func(srk srkHandle) error {
		loaded, err := tpm2.Load{
			ParentHandle: srk.auth(tpm2.AESEncryption(128, tpm2.EncryptIn)),
			InPrivate:    tpm2.TPM2BPrivate{Buffer: priv},
			InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](pub),
		}.Execute(t)
		if err != nil {
			// The private part is integrity-protected with a key derived
			// from the SRK's seed: after TPM2_Clear (or on another TPM) it
			// no longer verifies.
			if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) {
				return fmt.Errorf("%w: %v", ErrTPMCleared, err)
			}
			return fmt.Errorf("%w: loading the sealed object: %v", ErrTPM, err)
		}
		defer s.flush(t, loaded.ObjectHandle, "sealed object")
		item := tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name,
			Auth: srk.session(tpm2.AESEncryption(128, tpm2.EncryptOut))}
		if len(pcrs) > 0 {
			sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...)}}}
			item.Auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
				_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}.Execute(t)
				return err
			}, tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.handle, srk.public))
		}
		rsp, err := tpm2.Unseal{ItemHandle: item}.Execute(t)
		if err != nil {
			if errors.Is(err, tpm2.TPMRCPolicyFail) || errors.Is(err, tpm2.TPMRCValue) {
				return fmt.Errorf("%w: PCRs %v: %v", ErrTPMPolicy, pcrs, err)
			}
			return fmt.Errorf("%w: unsealing: %v", ErrTPM, err)
		}
		key = rsp.OutData.Buffer
		return nil
	})
	defer clear(key)
	if err != nil {
		return nil, err
	}
	if len(key) != tpmKeySize {
		return nil, fmt.Errorf("%w: sealed key is %d bytes", ErrCorrupt, len(key))
	}
	plain, ok, err := r.open(key)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: authentication failed after the TPM unsealed the key", ErrCorrupt)
	}
	return plain, nil
}

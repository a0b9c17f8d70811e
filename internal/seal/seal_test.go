package seal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/lmnt-marketplace/lmntd/internal/hw"
)

// board is a fixture board tree from the hw package.
func board(name string) hw.Paths {
	return hw.Paths{Root: filepath.Join("..", "..", "hw", "boards", name)}
}

// logBuffer captures slog output (JSON, debug level) safely.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func secret32(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func noTPM() (transport.TPMCloser, error) { return nil, errors.New("no TPM in this test") }

func softwareOpts(dir string, host hw.Paths, log *slog.Logger) Options {
	return Options{Mode: ModeSoftware, StateDir: dir, Software: SoftwareOptions{Host: host},
		TPM: TPMOptions{Open: noTPM}, Logger: log}
}

func tpmOpts(dir string, tpm *swtpm, log *slog.Logger) Options {
	return Options{Mode: ModeTPM, StateDir: dir, TPM: TPMOptions{Open: tpm.open},
		Software: SoftwareOptions{Host: board("rpi-4b")}, Logger: log}
}

func openStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := OpenStore(opts)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

func mustLoad(t *testing.T, s *Store, want []byte) Info {
	t.Helper()
	got, info, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Load returned a different secret")
	}
	return info
}

// snapshot records every file in dir with its content.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertUnchanged(t *testing.T, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("state directory changed: %d files before, %d after", len(before), len(after))
	}
	for p, b := range before {
		if !bytes.Equal(after[p], b) {
			t.Errorf("%s changed or vanished", p)
		}
	}
}

func TestTPMRoundTrip(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	dir := t.TempDir()
	s := openStore(t, tpmOpts(dir, tpm, nil))
	if s.Sealer().Name() != BackendTPM {
		t.Fatalf("sealer = %s", s.Sealer().Name())
	}
	if _, _, err := s.Load(); !errors.Is(err, ErrNoSealedKey) {
		t.Fatalf("Load before Create: %v, want ErrNoSealedKey", err)
	}
	secret := secret32(t)
	start := time.Now()
	if err := s.Create(secret, "keyid-1"); err != nil {
		t.Fatal(err)
	}
	sealTime := time.Since(start)
	start = time.Now()
	info := mustLoad(t, s, secret)
	t.Logf("swtpm: seal+verify %v, unseal %v", sealTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if info.Backend != BackendTPM || info.KeyID != "keyid-1" || info.Version != 1 {
		t.Errorf("Info = %+v", info)
	}
	fi, err := os.Stat(s.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if err := s.Create(secret32(t), "keyid-2"); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	// A fresh process (new Store) opens the same blob.
	mustLoad(t, openStore(t, tpmOpts(dir, tpm, nil)), secret)
}

func TestTPMClearedStateDeleted(t *testing.T) {
	tpmState := t.TempDir()
	tpm := startSWTPM(t, tpmState)
	dir := t.TempDir()
	var logs logBuffer
	s := openStore(t, tpmOpts(dir, tpm, logs.logger()))
	secret := secret32(t)
	if err := s.Create(secret, "keyid-cleared"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	// Reset the TPM: delete its state and start it again (new owner seed).
	tpm.stop()
	if err := os.RemoveAll(tpmState); err != nil {
		t.Fatal(err)
	}
	tpm2nd := startSWTPM(t, tpmState)
	s = openStore(t, tpmOpts(dir, tpm2nd, logs.logger()))
	_, _, err := s.Load()
	if !errors.Is(err, ErrTPMCleared) {
		t.Fatalf("Load after TPM reset: %v, want ErrTPMCleared", err)
	}
	var ue *UnsealError
	if !errors.As(err, &ue) || ue.Path != s.Path() || ue.Backend != BackendTPM {
		t.Fatalf("error is not an *UnsealError naming the file: %#v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "lmnt pair") || !strings.Contains(msg, s.Path()) {
		t.Errorf("message does not tell the owner what to do: %s", msg)
	}
	t.Logf("owner sees: %s", err)
	// Nothing replaced: Create still refuses, Reseal cannot proceed, the blob is intact.
	if err := s.Create(secret32(t), "new"); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an unreadable blob: %v, want ErrExists", err)
	}
	if _, err := s.Reseal(); !errors.Is(err, ErrTPMCleared) {
		t.Fatalf("Reseal: %v, want ErrTPMCleared", err)
	}
	assertUnchanged(t, dir, before)
	if !strings.Contains(logs.String(), "does not unseal") {
		t.Error("the failure was not logged")
	}
}

func TestTPMClearCommand(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	dir := t.TempDir()
	s := openStore(t, tpmOpts(dir, tpm, nil))
	if err := s.Create(secret32(t), "k"); err != nil {
		t.Fatal(err)
	}
	// TPM2_Clear through the lockout hierarchy, as firmware setup menus do.
	tp, err := tpm.open()
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}.Execute(tp)
	tp.Close()
	if err != nil {
		t.Fatalf("TPM2_Clear: %v", err)
	}
	if _, _, err := s.Load(); !errors.Is(err, ErrTPMCleared) {
		t.Fatalf("Load after TPM2_Clear: %v, want ErrTPMCleared", err)
	}
}

func TestTPMPCRPolicy(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	dir := t.TempDir()
	opts := tpmOpts(dir, tpm, nil)
	opts.TPM.PCRs = []uint{16, 7, 16} // 16 is the resettable debug PCR
	s := openStore(t, opts)
	secret := secret32(t)
	if err := s.Create(secret, "k"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, s, secret)
	before := snapshot(t, dir)

	// A changed boot measurement: extend PCR 16.
	tp, err := tpm.open()
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{1}, 32)}}},
	}.Execute(tp)
	tp.Close()
	if err != nil {
		t.Fatalf("PCR_Extend: %v", err)
	}
	if _, _, err := s.Load(); !errors.Is(err, ErrTPMPolicy) {
		t.Fatalf("Load after PCR change: %v, want ErrTPMPolicy", err)
	}
	assertUnchanged(t, dir, before)
}

func TestSoftwareRoundTrip(t *testing.T) {
	for _, name := range []string{"rpi-zero", "rpi-4b", "rpi-5", "btt-cb1", "btt-cb2", "orangepi-zero2", "generic-x86_64"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var logs logBuffer
			s := openStore(t, softwareOpts(dir, board(name), logs.logger()))
			secret := secret32(t)
			if err := s.Create(secret, "k"); err != nil {
				t.Fatal(err)
			}
			if info := mustLoad(t, s, secret); info.Backend != BackendSoftware {
				t.Fatalf("backend %s", info.Backend)
			}
			for _, f := range []string{s.Path(), filepath.Join(dir, SoftwareKeyFileName)} {
				fi, err := os.Stat(f)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
				}
			}
			if strings.Contains(logs.String(), string(hw.SourceMachineID)) {
				t.Errorf("%s has a board-unique source but the seal used machine-id: %s", name, logs.String())
			}
		})
	}
}

func TestSoftwareMachineIDFallbackIsLogged(t *testing.T) {
	dir := t.TempDir()
	var logs logBuffer
	s := openStore(t, softwareOpts(dir, board("generic-arm64"), logs.logger()))
	secret := secret32(t)
	if err := s.Create(secret, "k"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, s, secret)
	if !strings.Contains(logs.String(), "machine-id only") {
		t.Errorf("weak binding not logged: %s", logs.String())
	}
}

func TestSoftwareOtherBoard(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, softwareOpts(dir, board("rpi-4b"), nil))
	secret := secret32(t)
	if err := s.Create(secret, "k"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	// The same SD card in another Pi (different serial), and in a board
	// without a device-tree serial at all.
	for _, other := range []string{"rpi-400", "rpi-cm4", "orangepi-zero2", "generic-x86_64"} {
		t.Run(other, func(t *testing.T) {
			moved := openStore(t, softwareOpts(dir, board(other), nil))
			_, _, err := moved.Load()
			if !errors.Is(err, ErrBoardMismatch) {
				t.Fatalf("Load on %s: %v, want ErrBoardMismatch", other, err)
			}
			if !strings.Contains(err.Error(), string(hw.SourceDeviceTreeSerial)) || !strings.Contains(err.Error(), "original") && !strings.Contains(err.Error(), "board it was set up on") {
				t.Errorf("message does not say which source or what to do: %s", err)
			}
			if err := moved.Create(secret32(t), "new"); !errors.Is(err, ErrExists) {
				t.Fatalf("Create: %v, want ErrExists", err)
			}
		})
	}
	assertUnchanged(t, dir, before)
	mustLoad(t, s, secret) // back in the original board
}

func TestSoftwareKeyFileProblems(t *testing.T) {
	setup := func(t *testing.T) (*Store, string) {
		dir := t.TempDir()
		s := openStore(t, softwareOpts(dir, board("btt-cb1"), nil))
		if err := s.Create(secret32(t), "k"); err != nil {
			t.Fatal(err)
		}
		return s, filepath.Join(dir, SoftwareKeyFileName)
	}
	t.Run("missing", func(t *testing.T) {
		s, key := setup(t)
		if err := os.Remove(key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Load(); !errors.Is(err, ErrSoftwareKeyMissing) {
			t.Fatalf("%v, want ErrSoftwareKeyMissing", err)
		}
		if _, err := os.Stat(key); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("Load recreated the key file")
		}
	})
	t.Run("replaced", func(t *testing.T) {
		s, key := setup(t)
		if err := os.WriteFile(key, bytes.Repeat([]byte{9}, 32), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Load(); !errors.Is(err, ErrSoftwareKeyMismatch) {
			t.Fatalf("%v, want ErrSoftwareKeyMismatch", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		s, key := setup(t)
		if err := os.Truncate(key, 20); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v, want ErrCorrupt", err)
		}
	})
	t.Run("world-readable", func(t *testing.T) {
		s, key := setup(t)
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.Load()
		if !errors.Is(err, ErrSoftwareKeyInsecure) || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("%v, want ErrSoftwareKeyInsecure with advice", err)
		}
	})
}

// TestCorruptBlob damages the key file in the ways storage does: truncation
// at any length, flipped bits, garbage, an envelope from the future.
func TestCorruptBlob(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	backends := map[string]func(dir string) Options{
		"tpm":      func(dir string) Options { return tpmOpts(dir, tpm, nil) },
		"software": func(dir string) Options { return softwareOpts(dir, board("rpi-3b"), nil) },
	}
	for name, optsFor := range backends {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, optsFor(dir))
			if err := s.Create(secret32(t), "k"); err != nil {
				t.Fatal(err)
			}
			good, err := os.ReadFile(s.Path())
			if err != nil {
				t.Fatal(err)
			}
			expect := func(t *testing.T, data []byte, want error) {
				t.Helper()
				if err := os.WriteFile(s.Path(), data, 0o600); err != nil {
					t.Fatal(err)
				}
				_, _, err := s.Load()
				if !errors.Is(err, want) {
					t.Fatalf("Load: %v, want %v", err, want)
				}
				if got, _ := os.ReadFile(s.Path()); !bytes.Equal(got, data) {
					t.Fatal("Load modified the damaged file")
				}
			}
			for _, n := range []int{0, 1, 10, len(good) / 3, len(good) / 2, len(good) - 3, len(good) - 2} {
				expect(t, good[:n], ErrCorrupt)
			}
			expect(t, []byte("\x00\xff garbage"), ErrCorrupt)

			var env map[string]any
			if err := json.Unmarshal(good, &env); err != nil {
				t.Fatal(err)
			}
			blob, _ := base64.StdEncoding.DecodeString(env["blob"].(string))
			withBlob := func(b []byte, fixSum bool) []byte {
				e := maps(env)
				e["blob"] = base64.StdEncoding.EncodeToString(b)
				if fixSum {
					e["blob_sha256"] = sha256hex(b)
				}
				out, _ := json.Marshal(e)
				return out
			}
			// A flipped bit caught by the checksum.
			flipped := slices.Clone(blob)
			flipped[len(flipped)-5] ^= 0x40
			expect(t, withBlob(flipped, false), ErrCorrupt)
			// The same flip with a matching checksum: the AEAD catches it.
			expect(t, withBlob(flipped, true), ErrCorrupt)
			// A blob cut short with a matching checksum: the parser catches it.
			expect(t, withBlob(blob[:len(blob)/2], true), ErrCorrupt)
			expect(t, withBlob(blob[:12], true), ErrCorrupt)
			// Header tampering (the backend tag) is caught before any crypto.
			tagged := slices.Clone(blob)
			tagged[len(blobMagic)+1] ^= 3
			expect(t, withBlob(tagged, true), ErrCorrupt)

			future := maps(env)
			future["version"] = 2
			future["new_field"] = true
			out, _ := json.Marshal(future)
			expect(t, out, ErrUnsupportedVersion)

			expect(t, good, nil)
		})
	}
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestAutoSelection(t *testing.T) {
	var logs logBuffer
	opts := Options{Mode: ModeAuto, StateDir: t.TempDir(), TPM: TPMOptions{Open: noTPM},
		Software: SoftwareOptions{Host: board("rpi-zero-w")}, Logger: logs.logger()}
	s, err := Select(opts)
	if err != nil || s.Name() != BackendSoftware {
		t.Fatalf("auto without TPM = %v, %v; want software", s, err)
	}
	if !strings.Contains(logs.String(), "no usable TPM") {
		t.Errorf("fallback not logged: %s", logs.String())
	}
	// Without Open, auto tries the device paths: none exist here.
	opts.TPM = TPMOptions{Devices: []string{filepath.Join(t.TempDir(), "tpmrm0")}}
	if s, err := Select(opts); err != nil || s.Name() != BackendSoftware {
		t.Fatalf("auto with missing devices = %v, %v", s, err)
	}
	opts.Mode = ModeTPM
	if _, err := Select(opts); !errors.Is(err, ErrTPMUnavailable) {
		t.Fatalf("tpm mode without a TPM: %v, want ErrTPMUnavailable", err)
	}
	tpm := startSWTPM(t, t.TempDir())
	opts.Mode, opts.TPM = ModeAuto, TPMOptions{Open: tpm.open}
	if s, err := Select(opts); err != nil || s.Name() != BackendTPM {
		t.Fatalf("auto with swtpm = %v, %v; want tpm", s, err)
	}
	if _, err := ParseMode("tmp"); err == nil {
		t.Error("ParseMode accepted a typo")
	}
}

func TestReseal(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	dir := t.TempDir()
	secret := secret32(t)
	sw := openStore(t, softwareOpts(dir, board("rpi-4b"), nil))
	if err := sw.Create(secret, "k"); err != nil {
		t.Fatal(err)
	}
	// software → tpm
	toTPM := openStore(t, tpmOpts(dir, tpm, nil))
	mustLoad(t, toTPM, secret) // opened with the envelope's backend
	info, err := toTPM.Reseal()
	if err != nil {
		t.Fatalf("Reseal to tpm: %v", err)
	}
	if info.Backend != BackendTPM || info.KeyID != "k" {
		t.Fatalf("Info after reseal = %+v", info)
	}
	if _, err := os.Stat(toTPM.Path() + ".bak"); !errors.Is(err, fs.ErrNotExist) {
		t.Error(".bak left behind after a verified reseal")
	}
	mustLoad(t, toTPM, secret)

	// tpm → software, with the TPM gone afterwards: the software blob stands alone.
	toSW := softwareOpts(dir, board("rpi-4b"), nil)
	toSW.TPM.Open = tpm.open
	if _, err := openStore(t, toSW).Reseal(); err != nil {
		t.Fatalf("Reseal to software: %v", err)
	}
	tpm.stop()
	if info := mustLoad(t, sw, secret); info.Backend != BackendSoftware {
		t.Fatalf("backend %s", info.Backend)
	}

	// A reseal whose target fails leaves the old blob untouched and no .bak.
	before := snapshot(t, dir)
	broken := openStore(t, Options{Mode: ModeSoftware, StateDir: dir, Software: SoftwareOptions{Host: board("rpi-4b"), KeyFile: filepath.Join(dir, "no-such-dir", "key")}})
	if _, err := broken.Reseal(); err == nil {
		t.Fatal("Reseal to a backend that cannot seal succeeded")
	}
	assertUnchanged(t, dir, before)

	// A leftover .bak from an interrupted reseal is never overwritten.
	if err := os.WriteFile(sw.Path()+".bak", []byte("older"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Reseal(); err == nil || !strings.Contains(err.Error(), ".bak") {
		t.Fatalf("Reseal with an existing .bak: %v", err)
	}
	if b, _ := os.ReadFile(sw.Path() + ".bak"); string(b) != "older" {
		t.Fatal(".bak was overwritten")
	}
}

func TestRetire(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, softwareOpts(dir, board("rpi-4b"), nil))
	if _, err := s.Retire(); !errors.Is(err, ErrNoSealedKey) {
		t.Fatalf("Retire without a key: %v", err)
	}
	old := secret32(t)
	if err := s.Create(old, "old"); err != nil {
		t.Fatal(err)
	}
	retired, err := s.Retire()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(retired), KeyFileName+".retired-") {
		t.Fatalf("retired as %s", retired)
	}
	if err := s.Create(secret32(t), "new"); err != nil {
		t.Fatalf("Create after Retire: %v", err)
	}
	if _, err := os.Stat(retired); err != nil {
		t.Fatalf("retired blob gone: %v", err)
	}
}

// TestNoSecretOutsideTheBlob runs every operation with debug logging and
// then searches the state directory and the logs for the secret.
func TestNoSecretOutsideTheBlob(t *testing.T) {
	tpm := startSWTPM(t, t.TempDir())
	dir := t.TempDir()
	var logs logBuffer
	secret := secret32(t)
	sw := openStore(t, softwareOpts(dir, board("btt-cb2"), logs.logger()))
	if err := sw.Create(secret, "k"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, sw, secret)
	tpOpts := tpmOpts(dir, tpm, logs.logger())
	tpOpts.Software.Host = board("btt-cb2")
	tp := openStore(t, tpOpts)
	if _, err := tp.Reseal(); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, tp, secret)
	// Failures log too: make one.
	tpm.stop()
	if _, _, err := tp.Load(); err == nil {
		t.Fatal("Load without the TPM succeeded")
	}

	forms := []string{
		hex.EncodeToString(secret), strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret),
	}
	files := snapshot(t, dir)
	if len(files) != 2 {
		t.Errorf("state directory holds %d files, want the blob and the software key file", len(files))
	}
	for path, content := range files {
		for _, needle := range append(forms, string(secret)) {
			if bytes.Contains(content, []byte(needle)) {
				t.Errorf("secret found in %s", path)
			}
		}
	}
	for _, needle := range forms {
		if strings.Contains(logs.String(), needle) {
			t.Errorf("secret found in the logs")
		}
	}
	if !strings.Contains(logs.String(), "printer key resealed") {
		t.Error("logs were not captured")
	}
}

package pipeline

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
	"github.com/lmnt-marketplace/lmntd/internal/threadprio"
)

// job is what the marketplace would send for one plaintext: a DEK package
// for the printer, the IV and the CBC body.
type job struct {
	printerPriv [32]byte
	dek         [32]byte
	iv          [16]byte
	pkg         string
	body        []byte
}

func newJob(t testing.TB, plaintext []byte) *job {
	t.Helper()
	j := &job{}
	rand.Read(j.printerPriv[:])
	rand.Read(j.dek[:])
	rand.Read(j.iv[:])
	j.pkg = sealDEK(t, j.printerPriv, j.dek[:])
	j.body = encryptCBC(&j.dek, &j.iv, plaintext)
	return j
}

// sealDEK wraps key material for the printer as the marketplace does.
func sealDEK(t testing.TB, printerPriv [32]byte, dek []byte) string {
	t.Helper()
	pubSlice, err := curve25519.X25519(printerPriv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	ephPub, ephPriv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	sealed := box.Seal(nil, dek, &nonce, (*[32]byte)(pubSlice), ephPriv)
	enc := base64.StdEncoding.EncodeToString
	return enc(ephPub[:]) + ":" + enc(nonce[:]) + ":" + enc(sealed)
}

func encryptCBC(key *[32]byte, iv *[16]byte, pt []byte) []byte {
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	buf := make([]byte, len(pt)+pad)
	copy(buf, pt)
	for i := len(pt); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	b, _ := aes.NewCipher(key[:])
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(buf, buf)
	return buf
}

// fernetToken builds a token per the Fernet specification; key is the
// 44-character key.
func fernetToken(t testing.TB, key string, pt []byte) string {
	t.Helper()
	raw, err := base64.URLEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	var iv [16]byte
	rand.Read(iv[:])
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	ct := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
	b, _ := aes.NewCipher(raw[16:])
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(ct, ct)
	msg := binary.BigEndian.AppendUint64([]byte{0x80}, 1700000000)
	msg = append(append(msg, iv[:]...), ct...)
	m := hmac.New(sha256.New, raw[:16])
	m.Write(msg)
	return base64.URLEncoding.EncodeToString(m.Sum(msg))
}

func newFernetKey() string {
	var raw [32]byte
	rand.Read(raw[:])
	return base64.URLEncoding.EncodeToString(raw[:])
}

// memfdCount counts this process's open memfds: a failed run must leave
// none behind.
func memfdCount(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "/memfd:") {
			n++
		}
	}
	return n
}

// checkSealedCopy asserts the memfd holds exactly want, carries all four
// seals and refuses writes.
func checkSealedCopy(t *testing.T, res *Result, want []byte) {
	t.Helper()
	if res.Size != int64(len(want)) {
		t.Fatalf("size %d, want %d", res.Size, len(want))
	}
	// Read the memfd back through the kernel, not through our own state.
	got := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		n, err := unix.Pread(res.File.Fd(), buf, off)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		got.Write(buf[:n])
		off += int64(n)
	}
	if [32]byte(got.Sum(nil)) != sha256.Sum256(want) {
		t.Fatal("memfd bytes differ from the source")
	}
	seals, err := res.File.Seals()
	if err != nil {
		t.Fatal(err)
	}
	all := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if seals&all != all {
		t.Fatalf("seals %#x, want shrink|grow|write|seal", seals)
	}
	if _, err := unix.Write(res.File.Fd(), []byte("G28\n")); !errors.Is(err, unix.EPERM) {
		t.Fatalf("write to the sealed memfd: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(res.File.Fd(), 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("truncate of the sealed memfd: %v, want EPERM", err)
	}
}

func TestRoundTripEveryFixture(t *testing.T) {
	for _, f := range testutil.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			src := f.Bytes(t)
			j := newJob(t, src)
			res, err := Run(context.Background(), Input{
				Body: iotest.HalfReader(bytes.NewReader(j.body)), // short reads, like a network body
				Key:  DEKPackage(j.pkg, &j.printerPriv),
				IV:   &j.iv,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer res.File.Close()
			if res.Format != jobcrypt.FormatCBC {
				t.Fatalf("format %v", res.Format)
			}
			checkSealedCopy(t, res, src)
			if res.Metadata == nil || res.Metadata.SlicerName == "" || res.Metadata.MaxZ <= 0 {
				t.Fatalf("no slicer in metadata: %+v", res.Metadata)
			}
		})
	}
}

func TestRoundTripFernetAndPlaintext(t *testing.T) {
	f := testutil.Fixtures(t)[0]
	src := f.Bytes(t)
	key := newFernetKey()
	token := fernetToken(t, key, src)

	t.Run("fernet key field", func(t *testing.T) {
		res, err := Run(context.Background(), Input{Body: strings.NewReader(token), Key: FernetKey(key)})
		if err != nil {
			t.Fatal(err)
		}
		defer res.File.Close()
		if res.Format != jobcrypt.FormatFernet {
			t.Fatalf("format %v", res.Format)
		}
		checkSealedCopy(t, res, src)
	})
	t.Run("fernet key inside a DEK package", func(t *testing.T) {
		var priv [32]byte
		rand.Read(priv[:])
		res, err := Run(context.Background(), Input{Body: strings.NewReader(token), Key: DEKPackage(sealDEK(t, priv, []byte(key)), &priv)})
		if err != nil {
			t.Fatal(err)
		}
		defer res.File.Close()
		checkSealedCopy(t, res, src)
	})
	t.Run("plaintext without key material", func(t *testing.T) {
		res, err := Run(context.Background(), Input{Body: bytes.NewReader(src)})
		if err != nil {
			t.Fatal(err)
		}
		defer res.File.Close()
		if res.Format != jobcrypt.FormatPlaintext {
			t.Fatalf("format %v", res.Format)
		}
		checkSealedCopy(t, res, src)
	})
}

// anyStage lets failure accept any stage (the test inspects it itself).
const anyStage Stage = ""

// failure runs in and asserts the stage, the cause and that no memfd is left.
func failure(t *testing.T, ctx context.Context, in Input, stage Stage, cause error) *Error {
	t.Helper()
	before := memfdCount(t)
	res, err := Run(ctx, in)
	if res != nil {
		res.File.Close()
		t.Fatal("a result came back with an error")
	}
	var pe *Error
	if !errors.As(err, &pe) || (stage != anyStage && pe.Stage != stage) {
		t.Fatalf("err = %v, want stage %s", err, stage)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Fatalf("err = %v, want cause %v", err, cause)
	}
	if after := memfdCount(t); after != before {
		t.Fatalf("%d memfds open after the failed run, %d before", after, before)
	}
	return pe
}

func gcodeSample(t *testing.T) []byte {
	return testutil.Fixtures(t)[0].Bytes(t)
}

func TestWrongPrinterKey(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	var other [32]byte
	rand.Read(other[:])
	failure(t, context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg, &other), IV: &j.iv}, StageKey, jobcrypt.ErrPackageAuth)
}

func TestMalformedPackage(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	failure(t, context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg+":x", &j.printerPriv), IV: &j.iv}, StageKey, jobcrypt.ErrPackageSegments)
}

// A wrong DEK is caught by the padding (255 times in 256) or the gate: the
// garbage is never released.
func TestWrongDEK(t *testing.T) {
	src := gcodeSample(t)
	padding, gate := 0, 0
	for range 40 {
		j := newJob(t, src)
		var wrong [32]byte
		rand.Read(wrong[:])
		pe := failure(t, context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(sealDEK(t, j.printerPriv, wrong[:]), &j.printerPriv), IV: &j.iv}, anyStage, nil)
		switch {
		case pe.Stage == StageDecrypt && errors.Is(pe, jobcrypt.ErrPadding):
			padding++
		case pe.Stage == StageGate:
			var rej *gcode.RejectError
			if !errors.As(pe, &rej) {
				t.Fatalf("gate stage without a RejectError: %v", pe)
			}
			gate++
		default:
			t.Fatalf("wrong DEK gave %v", pe)
		}
	}
	t.Logf("wrong DEK: %d caught by padding, %d by the gate", padding, gate)
}

func TestTruncatedCiphertext(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	failure(t, context.Background(), Input{Body: bytes.NewReader(j.body[:len(j.body)-5]), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageDecrypt, jobcrypt.ErrCiphertextLength)
	// Cut on a block boundary: the last block is no longer padding.
	cut := j.body[:len(j.body)-16]
	pe := failure(t, context.Background(), Input{Body: bytes.NewReader(cut), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageDecrypt, nil)
	if !errors.Is(pe, jobcrypt.ErrPadding) {
		t.Fatalf("block-aligned truncation: %v, want ErrPadding", pe)
	}
}

func TestEmptyCiphertext(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	failure(t, context.Background(), Input{Body: bytes.NewReader(nil), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageDecrypt, jobcrypt.ErrEmptyCiphertext)
}

func TestNonUTF8Plaintext(t *testing.T) {
	src := bytes.Clone(gcodeSample(t))
	at := len(src) / 2
	src[at] = 0xff
	j := newJob(t, src)
	pe := failure(t, context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageGate, nil)
	var rej *gcode.RejectError
	if !errors.As(pe, &rej) || rej.Reason != gcode.ReasonInvalidUTF8 || rej.Offset != int64(at) {
		t.Fatalf("err = %v, want invalid UTF-8 at %d", pe, at)
	}
}

func TestFernetBadHMACReleasesNothing(t *testing.T) {
	key := newFernetKey()
	token := []byte(fernetToken(t, key, gcodeSample(t)))
	raw, _ := base64.URLEncoding.DecodeString(string(token))
	raw[len(raw)-1] ^= 1
	bad := base64.URLEncoding.EncodeToString(raw)
	failure(t, context.Background(), Input{Body: strings.NewReader(bad), Key: FernetKey(key)}, StageDecrypt, jobcrypt.ErrFernetHMAC)
	// A wrong key: the same verdict, never a padding or gate error.
	failure(t, context.Background(), Input{Body: bytes.NewReader(token), Key: FernetKey(newFernetKey())}, StageDecrypt, jobcrypt.ErrFernetHMAC)
}

func TestKeyAndFormatErrors(t *testing.T) {
	src := gcodeSample(t)
	j := newJob(t, src)
	failure(t, context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg, &j.printerPriv)}, StageKey, ErrMissingIV)
	failure(t, context.Background(), Input{Body: strings.NewReader(fernetToken(t, newFernetKey(), src))}, StageKey, jobcrypt.ErrFernetNeedsKey)
	failure(t, context.Background(), Input{Body: bytes.NewReader(src), Key: FernetKey(newFernetKey())}, StageKey, jobcrypt.ErrFormatMismatch)
	failure(t, context.Background(), Input{Body: bytes.NewReader(src), Key: FernetKey("short")}, StageKey, jobcrypt.ErrFernetKey)
	// Without key material, ciphertext is not G-code.
	failure(t, context.Background(), Input{Body: bytes.NewReader(j.body)}, StageGate, nil)
}

func TestBodyReadError(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	boom := errors.New("connection reset by peer")
	body := io.MultiReader(bytes.NewReader(j.body[:100000]), iotest.ErrReader(boom))
	failure(t, context.Background(), Input{Body: body, Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageRead, boom)
}

// Cancelling ctx interrupts a read blocked on the body (a pipe here, like
// a stalled download) and fails at StageRead with context.Canceled.
func TestCancelInterruptsBlockedRead(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		w.Write(j.body[:64<<10]) // then stall
		cancel()
	}()
	failure(t, ctx, Input{Body: r, Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv}, StageRead, context.Canceled)
}

// The memfd a run returns belongs to the caller; closing it twice is fine
// and a closed one refuses operations.
func TestResultOwnership(t *testing.T) {
	src := gcodeSample(t)
	j := newJob(t, src)
	res, err := Run(context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv, Name: "job-42"})
	if err != nil {
		t.Fatal(err)
	}
	if res.File.Name() != "job-42" {
		t.Fatalf("memfd name %q", res.File.Name())
	}
	res.File.Close()
	if _, err := res.File.Seals(); !errors.Is(err, memfd.ErrClosed) {
		t.Fatalf("Seals after Close: %v", err)
	}
}

// The job engine calls Run on a thread of lowered priority: every goroutine
// the run starts (the memfd writer, jobcrypt's writer, the decrypting
// helpers) must go through Stream.Go, whose default, threadprio.Go, keeps
// the caller's priority. The hook here wraps threadprio.Go to see them all.
func TestEveryGoroutineAtTheCallersPriority(t *testing.T) {
	j := newJob(t, gcodeSample(t))
	var mu sync.Mutex
	var seen []threadprio.Priority
	spawn := func(f func()) {
		threadprio.Go(func() {
			p, err := threadprio.Of(unix.Gettid())
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			seen = append(seen, p)
			mu.Unlock()
			f()
		})
	}
	type outcome struct {
		lowered threadprio.Priority
		err     error
	}
	done := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread is lowered
		var o outcome
		mine, err := threadprio.Of(unix.Gettid())
		if err == nil {
			err = threadprio.SetNice(min(mine.Nice+3, 19))
		}
		if err == nil {
			err = threadprio.SetIOPrio(threadprio.IOPrioBestEffortLowest)
		}
		if err == nil {
			o.lowered, err = threadprio.Of(unix.Gettid())
		}
		if err == nil {
			var res *Result
			res, err = Run(context.Background(), Input{Body: bytes.NewReader(j.body), Key: DEKPackage(j.pkg, &j.printerPriv), IV: &j.iv,
				Stream: jobcrypt.StreamOptions{Workers: 3, Go: spawn}})
			if err == nil {
				res.File.Close()
			}
		}
		o.err = err
		done <- o
	}()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The memfd writer, jobcrypt's writer and two decrypting helpers.
	if len(seen) != 4 {
		t.Fatalf("%d goroutines started through Stream.Go, want 4", len(seen))
	}
	for i, p := range seen {
		if p != o.lowered {
			t.Errorf("goroutine %d ran at %+v, want the caller's %+v", i, p, o.lowered)
		}
	}
}

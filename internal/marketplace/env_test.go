package marketplace_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// env is one printer (key pair, state dir, client) next to one simulator,
// over HTTPS with the simulator's test CA on loopback.
type env struct {
	t        *testing.T
	sim      *marketsim.Server
	client   *marketplace.Client
	opts     marketplace.Options
	pub      *[32]byte
	priv     *[32]byte
	stateDir string
	lost     *lostRecorder
}

type lostRecorder struct {
	mu   sync.Mutex
	errs []error
}

func (l *lostRecorder) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *lostRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.errs)
}

// newEnv starts a simulator and an unpaired client. simOpts and tune may
// be nil.
func newEnv(t *testing.T, profile marketplace.Profile, simOpts *marketsim.Options, tune func(*marketplace.Options)) *env {
	t.Helper()
	var so marketsim.Options
	if simOpts != nil {
		so = *simOpts
	}
	sim, err := marketsim.New(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, sim.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, sim: sim, pub: pub, priv: priv, stateDir: filepath.Join(dir, "state"), lost: &lostRecorder{}}
	e.opts = marketplace.Options{
		Profile:        profile,
		BaseURL:        sim.URL(),
		CWSURL:         sim.URL(),
		PushBaseURL:    sim.PushURL(),
		ExtraCAFile:    caFile,
		StateDir:       e.stateDir,
		RequestTimeout: 5 * time.Second,
		OnPairingLost:  e.lost.record,
		// The simulator's storage host is another loopback port: reaching
		// it is what development mode is for (the SSRF tests turn it off).
		Development: true,
	}
	if tune != nil {
		tune(&e.opts)
	}
	e.client = e.newClient()
	return e
}

func (e *env) newClient() *marketplace.Client {
	e.t.Helper()
	c, err := marketplace.New(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var benchPrinter = marketplace.PrinterInfo{Name: "bench printer", Manufacturer: "Creality", Model: "Ender 3", ExtruderCount: 1}

// pair pairs the printer: by code (current) or login + registration (legacy).
func (e *env) pair() marketplace.Token {
	e.t.Helper()
	ctx := ctxT(e.t)
	if e.client.Profile() == marketplace.ProfileLegacy {
		if _, err := e.sim.AddUser("owner@example.com", "hunter2"); err != nil {
			e.t.Fatal(err)
		}
		userJWT, err := e.client.UserLogin(ctx, "owner@example.com", "hunter2")
		if err != nil {
			e.t.Fatal(err)
		}
		reg, err := e.client.RegisterPrinter(ctx, userJWT, e.pub[:], benchPrinter)
		if err != nil {
			e.t.Fatal(err)
		}
		return reg.Token
	}
	sess, err := e.client.PairStart(ctx, e.pub[:], benchPrinter)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.sim.ApprovePairing(sess.Code, ""); err != nil {
		e.t.Fatal(err)
	}
	if err := e.client.WaitForApproval(ctx, sess.SessionID, 10*time.Millisecond); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.client.PairComplete(ctx, sess.SessionID, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) printerID() string {
	tok, ok := e.client.Token()
	if !ok {
		e.t.Fatal("not paired")
	}
	return tok.PrinterID
}

// createJob queues gcode for the printer.
func (e *env) createJob(gcode []byte, kind marketsim.DownloadKind) string {
	e.t.Helper()
	info, err := e.sim.CreateJob(e.printerID(), gcode, marketsim.JobOptions{Download: kind})
	if err != nil {
		e.t.Fatal(err)
	}
	return info.ID
}

// decryptJob opens a job the way the printer must, written here with the
// reference libraries (nacl/box, crypto/aes) and independent of both the
// simulator and internal/jobcrypt.
func decryptJob(t *testing.T, priv *[32]byte, job marketplace.Job, ciphertext []byte) []byte {
	t.Helper()
	parts := strings.Split(job.DEKPackage, ":")
	if len(parts) != 3 {
		t.Fatalf("DEK package has %d segments, want 3", len(parts))
	}
	seg := make([][]byte, 3)
	for i, p := range parts {
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			t.Fatalf("DEK package segment %d: %v", i, err)
		}
		seg[i] = b
	}
	var eph [32]byte
	var nonce [24]byte
	copy(eph[:], seg[0])
	copy(nonce[:], seg[1])
	dek, ok := box.Open(nil, seg[2], &nonce, &eph, priv)
	if !ok || len(dek) != 32 {
		t.Fatalf("DEK box: ok=%v len=%d", ok, len(dek))
	}
	iv, err := hex.DecodeString(job.IVHex)
	if err != nil || len(iv) != 16 {
		t.Fatalf("IV %q: %v", job.IVHex, err)
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		t.Fatal(err)
	}
	if len(ciphertext) == 0 || len(ciphertext)%16 != 0 {
		t.Fatalf("ciphertext length %d", len(ciphertext))
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ciphertext)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 16 || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		t.Fatal("bad PKCS#7 padding")
	}
	return plain[:len(plain)-pad]
}

// keyOpener is the printer key as a BoxOpener (sealed pairing answers).
type keyOpener struct{ priv *[32]byte }

func (k keyOpener) OpenBox(ct, nonce, sender []byte) ([]byte, error) {
	var n [24]byte
	var s [32]byte
	copy(n[:], nonce)
	copy(s[:], sender)
	out, ok := box.Open(nil, ct, &n, &s, k.priv)
	if !ok {
		return nil, errors.New("box does not open")
	}
	return out, nil
}

// scaledClock runs waits faster by scale and records what was asked for,
// so backoff sequences are checked in fake time while tests take
// milliseconds. Now stays real: the simulator's tokens use real time.
type scaledClock struct {
	scale float64
	mu    sync.Mutex
	waits []time.Duration
}

func (c *scaledClock) Now() time.Time { return time.Now() }

func (c *scaledClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return clock.System{}.NewTimer(time.Duration(float64(d) / c.scale))
}

func (c *scaledClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

func newKey(t *testing.T) (*[32]byte, *[32]byte) {
	t.Helper()
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newJSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// steadyRand is a poller jitter source without jitter: the first poll at
// once, every later wait exactly its nominal length.
func steadyRand() func() float64 {
	first := true
	return func() float64 {
		if first {
			first = false
			return 0
		}
		return 0.5
	}
}

package jobs_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/clock/clocktest"
	. "github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// The acceptance tests run the engine, through the daemon's own adapters
// (package jobs/adapters), against the real marketplace simulator (HTTPS on
// loopback), the real marketplace client, the real decrypt pipeline, the
// real bridge server and the Go Klipper stand-in over a real SOCK_SEQPACKET
// socket with SCM_RIGHTS.

const testTimeout = 15 * time.Second

// world is what outlives a daemon: the marketplace, Klipper (the stand-in),
// the printer's key and the state directory.
type world struct {
	t         *testing.T
	dir       string
	stateDir  string
	sock      string
	caFile    string
	keyFile   string
	sim       *marketsim.Server
	printerID string
	priv      *ecdh.PrivateKey
	klipper   *standin.Standin
	stopK     func()
	clock     *clocktest.Fake
}

func newWorld(t *testing.T) *world {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "jobs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &world{t: t, dir: dir, stateDir: filepath.Join(dir, "state"), sock: filepath.Join(dir, "k.sock"),
		caFile: filepath.Join(dir, "ca.pem"), keyFile: filepath.Join(dir, "printer.key"), clock: clocktest.NewFake()}
	if err := os.MkdirAll(w.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.sim, err = marketsim.New(marketsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.sim.Close)
	if err := os.WriteFile(w.caFile, w.sim.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	w.priv, err = ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The child daemon of the crash tests reads the key from this file
	// (never from argv or the environment).
	if err := os.WriteFile(w.keyFile, w.priv.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	w.pair()
	return w
}

// client is a fresh marketplace client on the world's state directory, as a
// restarted daemon would create it.
func (w *world) client() *marketplace.Client {
	c, err := newClient(w.sim.URL(), w.caFile, w.stateDir)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func newClient(baseURL, caFile, stateDir string) (*marketplace.Client, error) {
	return marketplace.New(marketplace.Options{BaseURL: baseURL, ExtraCAFile: caFile, StateDir: stateDir,
		RequestTimeout: 5 * time.Second, DownloadIdleTimeout: 5 * time.Second})
}

func (w *world) pair() {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := w.sim.AddUser("owner@example.com", "correct horse"); err != nil {
		w.t.Fatal(err)
	}
	c := w.client()
	sess, err := c.PairStart(ctx, w.priv.PublicKey().Bytes(), marketplace.PrinterInfo{Name: "bench", Manufacturer: "LMNT", Model: "test"})
	if err != nil {
		w.t.Fatal(err)
	}
	if w.printerID, err = w.sim.ApprovePairing(sess.Code, ""); err != nil {
		w.t.Fatal(err)
	}
	if _, err := c.PairComplete(ctx, sess.SessionID, nil); err != nil {
		w.t.Fatal(err)
	}
}

// startKlipper runs the stand-in; it connects to (and reconnects to) the
// daemon's bridge socket on its own, like the extra.
func (w *world) startKlipper(speed int64) *standin.Standin {
	k := standin.New(standin.Config{SocketPath: w.sock, Speed: speed, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	var once sync.Once
	w.stopK = func() { once.Do(func() { cancel(); <-done }) }
	w.t.Cleanup(w.stopK)
	w.klipper = k
	return k
}

// stopKlipper stops the stand-in: its bridge connection drops for good.
func (w *world) stopKlipper() { w.stopK() }

// createJob queues plaintext G-code for the printer in the simulator.
func (w *world) createJob(gcode []byte) string {
	w.t.Helper()
	info, err := w.sim.CreateJob(w.printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return info.ID
}

func (w *world) daemonConfig() daemonConfig {
	return daemonConfig{StateDir: w.stateDir, Sock: w.sock, SimURL: w.sim.URL(), CAFile: w.caFile, KeyFile: w.keyFile}
}

// daemon is one run of the engine with its bridge server.
type daemon struct {
	w      *world
	eng    *Engine
	srv    *klipper.Server
	client *marketplace.Client
	cancel context.CancelFunc
	done   chan struct{}
	logs   *logBuffer
}

type daemonOption func(*Options)

func (w *world) startDaemon(opts ...daemonOption) *daemon {
	w.t.Helper()
	d, err := startDaemon(w.daemonConfig(),
		w.clock, opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	d.w = w
	w.t.Cleanup(d.stop)
	return d
}

// daemonConfig is where a daemon finds its world. It holds paths only: the
// crash tests pass it to a child process in a file.
type daemonConfig struct {
	StateDir, Sock, SimURL, CAFile, KeyFile string
}

// startDaemon wires the engine to the real parts the way lmntd does.
func startDaemon(cfg daemonConfig, clock clock.Clock, opts ...daemonOption) (*daemon, error) {
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := klipper.NewServer(klipper.Options{StatusInterval: time.Second, Logger: log})
	l, err := klipper.Listen(cfg.Sock, 0o600)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = srv.Serve(ctx, l) }()
	client, err := newClient(cfg.SimURL, cfg.CAFile, cfg.StateDir)
	if err != nil {
		cancel()
		return nil, err
	}
	o := Options{StateDir: cfg.StateDir, Marketplace: adapters.Marketplace{Client: func() *marketplace.Client { return client }},
		Decryptor: adapters.Decryptor{WithKey: withKeyFile(cfg.KeyFile), Logger: log},
		Printer:   adapters.Klipper{Server: srv}, Clock: clock, Logger: log, AutoStart: true,
		RetryMin: time.Second, RetryMax: time.Minute, RecoveryWait: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	eng, err := New(o)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(done)
		_ = eng.Run(ctx)
		<-serveDone
	}()
	return &daemon{eng: eng, srv: srv, client: client, cancel: cancel, done: done, logs: logs}, nil
}

// withKeyFile is the decryptor's key source with the printer key read from
// a test key file (the daemon unseals it from the TPM or its sealed key
// file instead); the key is wiped once the DEK package is open.
func withKeyFile(keyFile string) func(use func(priv *[32]byte) error) error {
	return func(use func(priv *[32]byte) error) error {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		defer clear(b)
		if len(b) != 32 {
			return fmt.Errorf("key file %s: %d bytes, want 32", keyFile, len(b))
		}
		return use((*[32]byte)(b))
	}
}

func (d *daemon) stop() {
	d.cancel()
	<-d.done
}

// poll runs one marketplace poll into the engine, as the poller does.
func (d *daemon) poll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	js, err := d.client.Poll(ctx)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	d.eng.Offer(adapters.Offers(js))
}

// waitJob waits until cond holds for the job's entry in the snapshot.
func (d *daemon) waitJob(t testing.TB, id string, what string, cond func(JobInfo) bool) JobInfo {
	t.Helper()
	var last JobInfo
	ok := waitEngine(t, d.eng, func(s Snapshot) bool {
		for _, j := range allJobs(s) {
			if j.ID == id {
				last = j
				return cond(j)
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("job %s: timed out waiting for %s; last %+v\nlog:\n%s", id, what, last, d.logs.String())
	}
	return last
}

func allJobs(s Snapshot) []JobInfo {
	out := append([]JobInfo{}, s.Queue...)
	if s.Active != nil {
		out = append(out, *s.Active)
	}
	return append(out, s.Finished...)
}

// waitEngine waits (on the engine's change signal, bounded by testTimeout)
// until cond holds for its snapshot.
func waitEngine(t testing.TB, e *Engine, cond func(Snapshot) bool) bool {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		changed := e.Updated()
		if cond(e.Snapshot()) {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// waitHistory waits until the simulator's status history for a job
// satisfies cond. The simulator has no change signal, so this polls.
func (w *world) waitHistory(id, what string, cond func([]marketsim.StatusPost) bool) []marketsim.StatusPost {
	w.t.Helper()
	var h []marketsim.StatusPost
	testutil.Eventually(w.t, testTimeout, "job "+id+": "+what, func() bool {
		h = w.sim.StatusHistory(id)
		return cond(h)
	})
	return h
}

func historyString(h []marketsim.StatusPost) string {
	var b strings.Builder
	for _, p := range h {
		b.WriteString(p.Status)
		if p.Message != "" {
			b.WriteString("(" + p.Message + ")")
		}
		b.WriteString(" ")
	}
	return b.String()
}

func statuses(h []marketsim.StatusPost) []string {
	var out []string
	for _, p := range h {
		out = append(out, p.Status)
	}
	return out
}

// terminalCount counts success/failure reports.
func terminalCount(h []marketsim.StatusPost) int {
	n := 0
	for _, p := range h {
		if p.Status == jobstatus.Success || p.Status == jobstatus.Failure {
			n++
		}
	}
	return n
}

func hasTerminal(h []marketsim.StatusPost) bool { return terminalCount(h) > 0 }

// waitKlipper waits until cond holds for the stand-in.
func (w *world) waitKlipper(what string, cond func(st klipper.Status) bool) klipper.Status {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	st, err := w.klipper.WaitFor(ctx, cond)
	if err != nil {
		w.t.Fatalf("stand-in: timed out waiting for %s: %v (status %+v)", what, err, st)
	}
	return st
}

// logBuffer collects a daemon's log for failure messages and for checking
// that nothing secret was logged.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

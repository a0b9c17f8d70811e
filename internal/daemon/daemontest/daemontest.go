// Package daemontest runs a real lmntd in-process for tests: the
// marketplace simulator over HTTPS, daemon.Run with a temporary state
// directory and the software sealer, and a Klipper stand-in on the real
// bridge socket. Only the marketplace and Klipper are stand-ins.
package daemontest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/daemon"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// Options shape one test daemon.
type Options struct {
	// Extra TOML appended to the generated lmntd.toml (new sections only,
	// or keys of sections the generator does not write).
	ExtraTOML string
	// MoonrakerConf, when set, is written next to printer.cfg as the old
	// plugin's moonraker.conf and imported (api_profile "auto"); the
	// marketplace URL then comes from it ("{{SIM}}" is replaced by the
	// simulator's URL).
	MoonrakerConf string
	// Profile is the API profile ("" ⇒ current).
	Profile string
	// HTTPListen turns the TCP listener on (e.g. "127.0.0.1:0" is not
	// possible: give a free port; FreePort helps).
	HTTPListen     string
	TrustedClients []string
	APIKey         string
	APIGroup       string
	// ProxyGroup turns the web server's proxy socket on (Daemon.ProxySocket),
	// for this group.
	ProxyGroup string
	// NoStandin leaves Klipper disconnected.
	NoStandin bool
	// StandinSpeed is the stand-in's read speed in bytes/s (0: instant).
	StandinSpeed int64
	PairingBurst int
	PairingEvery time.Duration
	// Prepare runs on the state directory before the daemon starts.
	Prepare func(stateDir string)
	// StateDir reuses a state directory (restart tests); "" ⇒ a new one.
	StateDir string
	// Sim reuses a simulator; nil ⇒ a new one.
	Sim *marketsim.Server
	// HostRoot reuses a host root (its machine-id binds the software key).
	HostRoot string
	// CheckInterval is marketplace.check_interval ("" ⇒ the simulator
	// config's quick 5s).
	CheckInterval string
	// Instance is the config's instance ("" ⇒ none; the paths stay the
	// test's own either way).
	Instance string
	// TimeScale and Jitter go to daemon.Options (fleet tests).
	TimeScale float64
	Jitter    func() float64
}

// Daemon is a running test daemon.
type Daemon struct {
	T        testing.TB
	Sim      *marketsim.Server
	Dir      string
	StateDir string
	HostRoot string
	Socket   string
	Bridge   string
	// ProxySocket is the web server's proxy socket ("" when off).
	ProxySocket string
	ConfigFile  string
	PrinterCfg  string
	Standin     *standin.Standin
	Client      *http.Client
	Log         *SyncBuffer

	cancel  context.CancelFunc
	done    chan error
	klStop  context.CancelFunc
	klDone  chan struct{}
	stopped bool
	err     error
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a daemon in-process and waits until its API answers (and the
// stand-in is connected, unless NoStandin). Cleanup stops it.
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	d := Setup(t, o)
	d.run(o)
	return d
}

// Setup starts the simulator and writes the daemon's files (lmntd.toml,
// printer.cfg, the CA, a host root) without running it.
func Setup(t testing.TB, o Options) *Daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "lmntd-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Traversable by other users: the peer-credential test connects as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &Daemon{T: t, Dir: dir, Log: &SyncBuffer{}}
	d.Sim = o.Sim
	if d.Sim == nil {
		if d.Sim, err = marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Sim.Close)
	}
	d.StateDir = o.StateDir
	if d.StateDir == "" {
		d.StateDir = filepath.Join(dir, "state")
	}
	d.HostRoot = o.HostRoot
	if d.HostRoot == "" {
		d.HostRoot = filepath.Join(dir, "host")
		var mid [16]byte
		_, _ = rand.Read(mid[:])
		mustWrite(t, filepath.Join(d.HostRoot, "etc", "machine-id"), hex.EncodeToString(mid[:])+"\n", 0o444)
	}
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	d.Socket, d.Bridge = filepath.Join(run, "api.sock"), filepath.Join(run, "klipper.sock")
	d.PrinterCfg = filepath.Join(dir, "printer_data", "config", "printer.cfg")
	mustWrite(t, d.PrinterCfg, fmt.Sprintf("[virtual_sdcard]\npath: %s\n\n[%s]\n%s: %s\n\n[%s]\n\n[extruder]\nnozzle_diameter: 0.4\n\n%s\n",
		filepath.Join(dir, "printer_data", "gcodes"), klippercfg.SectionBridge, klippercfg.BridgeSocketOption, d.Bridge,
		klippercfg.SectionSecurePrint, klippercfg.MacroSnippet), 0o644)
	ca := filepath.Join(dir, "ca.pem")
	mustWrite(t, ca, string(d.Sim.CACertPEM()), 0o644)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	profile := o.Profile
	if profile == "" {
		profile = config.ProfileCurrent
	}
	api := fmt.Sprintf("[api]\nsocket = %q\n", d.Socket)
	if o.HTTPListen != "" {
		api += fmt.Sprintf("listen = %q\n", o.HTTPListen)
	}
	if len(o.TrustedClients) > 0 {
		q := make([]string, len(o.TrustedClients))
		for i, c := range o.TrustedClients {
			q[i] = fmt.Sprintf("%q", c)
		}
		api += "trusted_clients = [" + strings.Join(q, ", ") + "]\n"
	}
	if o.ProxyGroup != "" {
		d.ProxySocket = filepath.Join(run, "proxy", "api.sock")
		api += fmt.Sprintf("proxy_socket = %q\nproxy_group = %q\n", d.ProxySocket, o.ProxyGroup)
	}
	if o.APIKey != "" {
		kf := filepath.Join(dir, "api.key")
		mustWrite(t, kf, o.APIKey+"\n", 0o600)
		api += fmt.Sprintf("api_key_file = %q\n", kf)
	}
	var mrConf string
	if o.MoonrakerConf != "" {
		mrConf = filepath.Join(filepath.Dir(d.PrinterCfg), "moonraker.conf")
		mustWrite(t, mrConf, strings.ReplaceAll(o.MoonrakerConf, "{{SIM}}", d.Sim.URL()), 0o644)
	}
	toml := d.Sim.LmntdTOML(marketsim.LmntdConfig{Legacy: profile == config.ProfileLegacy, CAFile: ca, StateDir: d.StateDir,
		RuntimeDir: run, KlipperUser: me.Username, PrinterCfg: d.PrinterCfg, BridgeSocket: d.Bridge, API: api,
		MoonrakerConf: mrConf, Extra: o.ExtraTOML, CheckInterval: o.CheckInterval})
	if o.Instance != "" {
		toml = fmt.Sprintf("instance = %q\n", o.Instance) + toml
	}
	d.ConfigFile = filepath.Join(dir, "lmntd.toml")
	mustWrite(t, d.ConfigFile, toml, 0o644)
	if o.Prepare != nil {
		if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		o.Prepare(d.StateDir)
	}
	return d
}

func (d *Daemon) run(o Options) {
	t := d.T
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan error, 1)
	pollFloor := 200 * time.Millisecond
	if o.TimeScale > 0 {
		pollFloor = 0 // the daemon's default, scaled
	}
	go func() {
		d.done <- daemon.Run(ctx, daemon.Options{
			Config:          config.Options{ConfigFile: d.ConfigFile, Environ: func() []string { return nil }},
			LogOutput:       d.Log,
			HostRoot:        d.HostRoot,
			APIGroup:        o.APIGroup,
			PollMinInterval: pollFloor,
			TimeScale:       o.TimeScale,
			Jitter:          o.Jitter,
			PairingBurst:    o.PairingBurst,
			PairingEvery:    o.PairingEvery,
			// The spec's 2 s between approval checks is for the real
			// marketplace; the simulator answers at once.
			PairingPollInterval: 50 * time.Millisecond,
			ProfileProbeRetry:   50 * time.Millisecond,
		})
	}()
	t.Cleanup(func() { d.Stop() })
	d.Client = UnixClient(d.Socket)
	var lastErr error
	defer func() {
		if t.Failed() && lastErr != nil {
			t.Logf("the last attempt: %v", lastErr)
		}
	}()
	d.WaitFor("lmntd to answer on "+d.Socket, func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("lmntd exited during start: %v", err)
		default:
		}
		resp, err := d.Client.Get("http://lmntd/lmnt/v1/status")
		if err != nil {
			lastErr = err
			return false
		}
		resp.Body.Close()
		return true
	})
	if !o.NoStandin {
		d.Standin = standin.New(standin.Config{SocketPath: d.Bridge, Speed: o.StandinSpeed, ConfigFile: d.PrinterCfg})
		kctx, kstop := context.WithCancel(context.Background())
		d.klStop, d.klDone = kstop, make(chan struct{})
		go func() { defer close(d.klDone); _ = d.Standin.Run(kctx) }()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := d.Standin.WaitConnected(wctx, true); err != nil {
			t.Fatalf("stand-in did not connect: %v\nlog:\n%s", err, d.Log.String())
		}
	}
}

// Stop stops the daemon (and the stand-in) and returns Run's error.
func (d *Daemon) Stop() error {
	if d.stopped {
		return d.err
	}
	d.stopped = true
	d.cancel()
	select {
	case d.err = <-d.done:
	case <-time.After(15 * time.Second):
		d.T.Errorf("lmntd did not stop within 15 s\nlog:\n%s", d.Log.String())
	}
	if d.klStop != nil {
		d.klStop()
		<-d.klDone
	}
	return d.err
}

// Done delivers Run's result when the daemon stops by itself.
func (d *Daemon) Done() <-chan error { return d.done }

// MarkStopped records that the daemon ended by itself with err.
func (d *Daemon) MarkStopped(err error) {
	d.stopped, d.err = true, err
	if d.klStop != nil {
		d.klStop()
		<-d.klDone
	}
}

// UnixClient is an HTTP client for an API socket ("http://lmntd/...").
func UnixClient(socket string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		}}}
}

// Response is one API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test otherwise.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("answer %d is not the JSON expected: %v: %s", r.Status, err, r.Body)
	}
}

// Do sends one request with c; body may be nil, a []byte or any value
// (sent as JSON).
func Do(t testing.TB, c *http.Client, method, url string, body any, header http.Header) Response {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = strings.NewReader(string(b))
	case io.Reader:
		rd = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ct = strings.NewReader(string(data)), "application/json"
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// Call sends one request to the daemon's unix socket.
func (d *Daemon) Call(method, path string, body any) Response {
	d.T.Helper()
	return Do(d.T, d.Client, method, "http://lmntd"+path, body, nil)
}

// Pair pairs the daemon through the API and the simulator's approval, and
// returns the printer id.
func (d *Daemon) Pair() string {
	t := d.T
	t.Helper()
	r := d.Call(http.MethodPost, "/machine/lmnt_marketplace/pair/start", map[string]any{"printer_name": "Test printer"})
	if r.Status != http.StatusOK {
		t.Fatalf("pair/start: %d %s", r.Status, r.Body)
	}
	var p struct {
		Code string `json:"pairing_code"`
	}
	r.JSON(t, &p)
	id, err := d.Sim.ApprovePairing(p.Code, "")
	if err != nil {
		t.Fatal(err)
	}
	d.WaitFor("paired", func() bool {
		var st struct{ Status string }
		d.Call(http.MethodGet, "/machine/lmnt_marketplace/pair/status", nil).JSON(t, &st)
		return st.Status == "paired"
	})
	return id
}

// WaitFor polls cond until it holds (10 s at most).
func (d *Daemon) WaitFor(what string, cond func() bool) {
	d.T.Helper()
	d.WaitWithin(10*time.Second, what, cond)
}

// WaitWithin polls cond until it holds, for at most within; a failure
// shows lmntd's log.
func (d *Daemon) WaitWithin(within time.Duration, what string, cond func() bool) {
	d.T.Helper()
	defer d.logOnFailure()
	testutil.Eventually(d.T, within, what, cond)
}

// logOnFailure, deferred, adds lmntd's log to a test that failed (a
// t.Fatal inside the wait included: it unwinds through deferred calls).
func (d *Daemon) logOnFailure() {
	if d.T.Failed() {
		d.T.Logf("lmntd's log:\n%s", d.Log.String())
	}
}

func mustWrite(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

var (
	buildMu  sync.Mutex
	builtDir string
)

// Build compiles lmntd, lmnt and lmnt-demo once per test process
// into a directory readable by everyone and returns it: tests that need
// the real binaries (systemd activation, lmnt-demo) run them from there.
func Build(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtDir != "" {
		return builtDir
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "lmntd-bin-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-o", dir+"/", "github.com/lmnt-marketplace/lmntd/cmd/lmntd", "github.com/lmnt-marketplace/lmntd/cmd/lmnt",
		"github.com/lmnt-marketplace/lmntd/cmd/lmnt-demo")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("building lmntd, lmnt and lmnt-demo: %v\n%s", err, out)
	}
	builtDir = dir
	return dir
}

// CleanupBuild removes what Build made; call it from TestMain after m.Run.
func CleanupBuild() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtDir != "" {
		os.RemoveAll(builtDir)
		builtDir = ""
	}
}

// Package demo is lmnt-demo: the whole system on this machine without
// privileges. It starts the marketplace simulator (HTTPS with its own CA),
// the real lmntd binary with a temporary state directory and the software
// sealer, and a Klipper stand-in on the bridge socket; it pairs, prints one
// job and verifies that Klipper read exactly the source bytes. `make demo`
// runs it. It is a development tool: the shipped lmnt CLI does not carry
// it, nor the simulator and the stand-in it needs.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/apiclient"
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/democube"
	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// Main runs lmnt-demo and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("lmnt-demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	gcodePath := fs.String("gcode", "", "G-code file to print (default: a built-in 20 mm calibration cube)")
	printSeconds := fs.Float64("print-seconds", 3, "how long the stand-in takes to \"print\" the file")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	verbose := fs.Bool("verbose", false, "show lmntd's log as it runs")
	lmntdPath := fs.String("lmntd", "", "lmntd binary (default: lmntd next to this lmnt-demo)")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: lmnt-demo [--gcode FILE] [--print-seconds N] [--timeout D] [--verbose]\n\n%s\n\nFlags:\n%s",
			"Runs lmntd against a simulated marketplace and a Klipper stand-in, prints one\njob and checks what Klipper read.",
			fs.FlagUsagesWrapped(80))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lmnt-demo:", err)
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "lmnt-demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, *timeout)
	defer cancel()
	d := &demoRun{stdout: stdout, stderr: stderr, verbose: *verbose}
	err := d.run(ctx, *gcodePath, *lmntdPath, *printSeconds)
	d.cleanup()
	if err != nil {
		if d.logFile != "" && !*verbose {
			d.showLogTail()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintln(stderr, "lmnt-demo: gave up: the time limit passed (see --timeout)")
		} else {
			fmt.Fprintln(stderr, "lmnt-demo:", err)
		}
		return 1
	}
	fmt.Fprintln(stdout, "demo: everything worked; temporary files removed")
	return 0
}

type demoRun struct {
	stdout, stderr io.Writer
	verbose        bool
	tmp            string
	logFile        string
	logData        []byte
	sim            *marketsim.Server
	daemon         *exec.Cmd
	exited         chan error
	stopKl         context.CancelFunc
	klDone         chan struct{}
}

func (d *demoRun) say(format string, args ...any) {
	fmt.Fprintf(d.stdout, "demo: "+format+"\n", args...)
}

func (d *demoRun) run(ctx context.Context, gcodePath, lmntdPath string, printSeconds float64) error {
	start := time.Now()
	src, srcName, err := demoGcode(gcodePath)
	if err != nil {
		return err
	}
	srcSum := sha256.Sum256(src)
	if lmntdPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		lmntdPath = filepath.Join(filepath.Dir(exe), "lmntd")
	}
	if _, err := os.Stat(lmntdPath); err != nil {
		return fmt.Errorf("lmntd binary not found at %s (build it with `make build`, or pass --lmntd): %w", lmntdPath, err)
	}
	if d.tmp, err = os.MkdirTemp("", "lmnt-demo-"); err != nil {
		return err
	}
	d.say("temporary state in %s", d.tmp)

	// 1. The marketplace.
	if d.sim, err = marketsim.New(marketsim.Options{KeepAlive: 200 * time.Millisecond}); err != nil {
		return fmt.Errorf("starting the marketplace simulator: %w", err)
	}
	d.say("marketplace simulator at %s (HTTPS, its own CA), push stream at %s", d.sim.URL(), d.sim.PushURL())

	// 2. lmntd, as a child process with a temporary configuration.
	paths, err := d.writeFiles()
	if err != nil {
		return err
	}
	if err := d.startDaemon(lmntdPath, paths); err != nil {
		return err
	}
	c := apiclient.New(paths.apiSocket, apiclient.DefaultAnswerTimeout)
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	var last error
	err = pollUntil(wctx, 50*time.Millisecond, func() (bool, error) {
		last = c.Get(wctx, "/lmnt/v1/status", nil)
		return last == nil, nil
	})
	wcancel()
	if err != nil {
		return d.daemonErr(fmt.Errorf("lmntd did not answer on %s: %w", paths.apiSocket, last))
	}
	d.say("lmntd %s is serving on %s (software-sealed key in %s)", lmntdPath, paths.apiSocket, paths.state)

	// 3. Klipper, played by the stand-in, on the bridge socket.
	speed := int64(float64(len(src)) / max(printSeconds, 0.1))
	kl := standin.New(standin.Config{SocketPath: paths.bridge, Speed: speed, ConfigFile: paths.printerCfg,
		OnConsole: func(line string) { d.say("klipper console: %s", line) }})
	klCtx, stopKl := context.WithCancel(context.Background())
	d.stopKl, d.klDone = stopKl, make(chan struct{})
	go func() { defer close(d.klDone); _ = kl.Run(klCtx) }()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	err = kl.WaitConnected(cctx, true)
	ccancel()
	if err != nil {
		return d.daemonErr(fmt.Errorf("the Klipper stand-in did not connect to %s: %w", paths.bridge, err))
	}
	d.say("Klipper stand-in connected to the bridge socket %s", paths.bridge)

	// 4. Pairing: the code, approved in the "web shop" (the simulator's admin API).
	var p apitype.Pairing
	if err := c.Post(ctx, "/machine/lmnt_marketplace/pair/start", apitype.PairRequest{PrinterName: "Demo printer",
		Manufacturer: "LMNT", Model: "Stand-in", ExtruderCount: 1}, &p); err != nil {
		return d.daemonErr(fmt.Errorf("pair/start: %w", err))
	}
	d.say("pairing code %s: approving it as the owner would in the LMNT Marketplace", p.PairingCode)
	var approved struct {
		PrinterID string `json:"printer_id"`
	}
	if err := adminPost(ctx, d.sim.AdminURL()+"/admin/pairings/approve", "application/json",
		mustJSON(map[string]string{"code": p.PairingCode}), &approved); err != nil {
		return err
	}
	if err := pollUntil(ctx, 100*time.Millisecond, func() (bool, error) {
		if err := c.Get(ctx, "/machine/lmnt_marketplace/pair/status", &p); err != nil {
			return false, err
		}
		if p.Status == "expired" || p.Status == "failed" {
			return false, fmt.Errorf("pairing %s: %s", p.Status, p.Message)
		}
		return p.Status == "paired", nil
	}); err != nil {
		return d.daemonErr(err)
	}
	d.say("paired as printer %s (%s)", p.PrinterID, p.PrinterName)
	if err := c.Post(ctx, "/lmnt/v1/ready", nil, nil); err != nil {
		return d.daemonErr(err)
	}
	d.say("bed confirmed clear (lmnt ready)")

	// 5. A purchase: the simulator encrypts the G-code for this printer's key.
	var job marketsim.JobInfo
	if err := adminPost(ctx, d.sim.AdminURL()+"/admin/jobs?printer_id="+approved.PrinterID, "application/octet-stream", src, &job); err != nil {
		return err
	}
	d.say("job %s created from %s (%d bytes of G-code, %d bytes of ciphertext)", job.ID, srcName, len(src), job.CiphertextSize)

	// 6. Follow it.
	if err := d.follow(ctx, c, job.ID); err != nil {
		return d.daemonErr(err)
	}

	// 7. Verify what Klipper read.
	var rec *standin.PrintRecord
	for _, r := range kl.Prints() {
		if r.JobID == job.ID {
			r := r
			rec = &r
		}
	}
	want := hex.EncodeToString(srcSum[:])
	switch {
	case rec == nil:
		return fmt.Errorf("the Klipper stand-in never received job %s", job.ID)
	case rec.BytesRead != int64(len(src)) || rec.SHA256 != want:
		return fmt.Errorf("Klipper read %d bytes with SHA-256 %s; the source has %d bytes with SHA-256 %s", rec.BytesRead, rec.SHA256, len(src), want)
	}
	d.say("verified: Klipper read %d bytes, SHA-256 %s, identical to %s", rec.BytesRead, rec.SHA256, srcName)

	// 8. What the marketplace heard (the outbox delivers asynchronously).
	var history []marketsim.StatusPost
	if err := pollUntil(ctx, 100*time.Millisecond, func() (bool, error) {
		history = d.sim.StatusHistory(job.ID)
		return len(history) > 0 && history[len(history)-1].Status == jobstatus.Success, nil
	}); err != nil {
		return fmt.Errorf("the marketplace never received the success report: %w", err)
	}
	d.say("the marketplace's status history for job %s:", job.ID)
	for _, h := range history {
		line := fmt.Sprintf("  %s  %-10s", h.At.Local().Format("15:04:05.000"), h.Status)
		if h.Message != "" {
			line += "  " + h.Message
		}
		if h.FilamentUsed != nil {
			line += fmt.Sprintf("  filament %.0f mm", *h.FilamentUsed)
		}
		if h.PrintDuration != nil {
			line += fmt.Sprintf("  print %.1f s", *h.PrintDuration)
		}
		fmt.Fprintln(d.stdout, line)
	}
	d.say("done in %.1f s", time.Since(start).Seconds())
	return nil
}

// follow prints download, decrypt and print progress until the job ends.
func (d *demoRun) follow(ctx context.Context, c *apiclient.Client, jobID string) error {
	lastLine, lastState := "", apitype.JobState("")
	lastDecile := -1
	transferSaid := false
	return pollUntil(ctx, 25*time.Millisecond, func() (bool, error) {
		var st apitype.Status
		if err := c.Get(ctx, "/lmnt/v1/status", &st); err != nil {
			return false, err
		}
		if t := st.Transfer; t != nil && t.JobID == jobID && t.Done && !transferSaid {
			transferSaid = true
			d.say("job %s: downloaded, decrypted and checked %d bytes of ciphertext into a sealed memfd in %.0f ms",
				jobID, t.Bytes, t.Seconds*1000)
		}
		for _, f := range st.Jobs.Finished {
			if f.ID != jobID {
				continue
			}
			if f.State != apitype.JobSucceeded {
				return false, fmt.Errorf("job %s ended %s: %s", jobID, f.State, f.Message)
			}
			d.say("job %s: %s (%s)", jobID, f.State, f.Message)
			return true, nil
		}
		line := ""
		for _, q := range st.Jobs.Queue {
			if q.ID == jobID {
				line = "queued"
				if st.Jobs.Waiting != "" {
					line += ": " + st.Jobs.Waiting
				}
			}
		}
		if a := st.Jobs.Active; a != nil && a.ID == jobID {
			switch a.State {
			case apitype.JobDownloading:
				line = "downloading and decrypting (one stream, nothing on disk)"
				if t := st.Transfer; t != nil && t.JobID == jobID && !t.Done && t.Total > 0 {
					line = fmt.Sprintf("downloading and decrypting: %d%%", t.Bytes*100/t.Total/10*10)
				}
			case apitype.JobReady:
				line = "decrypted and checked; handing the sealed memfd to Klipper"
			case apitype.JobPrinting, apitype.JobPaused:
				if dec := int(a.Progress * 10); dec != lastDecile || a.State != lastState {
					lastDecile = dec
					line = fmt.Sprintf("%s: %d%%", a.State, dec*10)
				} else {
					line = lastLine
				}
			}
			lastState = a.State
		}
		if line != "" && line != lastLine {
			d.say("job %s: %s", jobID, line)
			lastLine = line
		}
		return false, nil
	})
}

type demoPaths struct {
	config, state, runtime, apiSocket, bridge, printerCfg, host string
}

// writeFiles lays out the temporary configuration: lmntd.toml, the CA, a
// printer.cfg with the lmnt sections and a host root with a machine-id
// for the software sealer's board binding.
func (d *demoRun) writeFiles() (demoPaths, error) {
	p := demoPaths{
		config: filepath.Join(d.tmp, "lmntd.toml"), state: filepath.Join(d.tmp, "state"), runtime: filepath.Join(d.tmp, "run"),
		printerCfg: filepath.Join(d.tmp, "printer_data", "config", "printer.cfg"), host: filepath.Join(d.tmp, "host"),
	}
	p.apiSocket, p.bridge = filepath.Join(p.runtime, "api.sock"), filepath.Join(p.runtime, "klipper.sock")
	caFile := filepath.Join(d.tmp, "marketplace-ca.pem")
	me, err := user.Current()
	if err != nil {
		return p, err
	}
	var mid [16]byte
	if _, err := rand.Read(mid[:]); err != nil {
		return p, err
	}
	printerCfg := fmt.Sprintf("[virtual_sdcard]\npath: %s\n\n[%s]\n%s: %s\n\n[%s]\n\n%s\n",
		filepath.Join(d.tmp, "printer_data", "gcodes"), klippercfg.SectionBridge, klippercfg.BridgeSocketOption, p.bridge,
		klippercfg.SectionSecurePrint, klippercfg.MacroSnippet)
	toml := d.sim.LmntdTOML(marketsim.LmntdConfig{CAFile: caFile, StateDir: p.state, RuntimeDir: p.runtime,
		KlipperUser: me.Username, PrinterCfg: p.printerCfg, BridgeSocket: p.bridge, API: fmt.Sprintf("[api]\nsocket = %q\n", p.apiSocket)})
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caFile, d.sim.CACertPEM(), 0o644},
		{p.printerCfg, []byte(printerCfg), 0o644},
		{filepath.Join(p.host, "etc", "machine-id"), []byte(hex.EncodeToString(mid[:]) + "\n"), 0o444},
		{p.config, []byte(toml), 0o644},
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return p, err
		}
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return p, err
		}
	}
	return p, nil
}

func (d *demoRun) startDaemon(bin string, p demoPaths) error {
	d.logFile = filepath.Join(d.tmp, "lmntd.log")
	logf, err := os.Create(d.logFile)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--config", p.config, "--host-root", p.host)
	// A clean environment: no systemd variables, no LMNTD_* settings of the
	// caller's shell.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.tmp, "LANG=C.UTF-8"}
	if d.verbose {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(logf, d.stderr), io.MultiWriter(logf, d.stderr)
	} else {
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	d.daemon, d.exited = cmd, make(chan error, 1)
	go func() { d.exited <- cmd.Wait(); logf.Close() }()
	return nil
}

// daemonErr adds lmntd's exit to an error when it died.
func (d *demoRun) daemonErr(err error) error {
	select {
	case werr := <-d.exited:
		d.exited <- werr
		return fmt.Errorf("%w (lmntd exited: %v)", err, werr)
	default:
		return err
	}
}

// cleanup stops everything the demo started and removes its files.
func (d *demoRun) cleanup() {
	if d.daemon != nil {
		_ = d.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.exited:
			if err != nil {
				fmt.Fprintf(d.stderr, "demo: lmntd exited: %v\n", err)
			}
		case <-time.After(10 * time.Second):
			fmt.Fprintln(d.stderr, "demo: lmntd did not stop within 10 s; killing it")
			_ = d.daemon.Process.Kill()
			<-d.exited
		}
	}
	if d.stopKl != nil {
		d.stopKl()
		<-d.klDone
	}
	if d.sim != nil {
		d.sim.Close()
	}
	if d.logFile != "" {
		d.logData, _ = os.ReadFile(d.logFile)
	}
	if d.tmp != "" {
		if err := os.RemoveAll(d.tmp); err != nil {
			fmt.Fprintf(d.stderr, "demo: removing %s: %v\n", d.tmp, err)
		}
	}
}

func (d *demoRun) showLogTail() {
	lines := strings.Split(strings.TrimRight(string(d.logData), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	fmt.Fprintln(d.stderr, "demo: the end of lmntd's log:")
	for _, l := range lines {
		fmt.Fprintln(d.stderr, "  "+l)
	}
}

// demoGcode reads the job's G-code: --gcode, or the built-in calibration
// cube.
func demoGcode(path string) ([]byte, string, error) {
	if path == "" {
		return democube.Generate(), democube.Name, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	if len(data) == 0 {
		return nil, "", fmt.Errorf("%s is empty", path)
	}
	return data, filepath.Base(path), nil
}

func pollUntil(ctx context.Context, every time.Duration, f func() (bool, error)) error {
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// adminPost calls the simulator's admin API (plain http on loopback).
func adminPost(ctx context.Context, url, contentType string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("marketplace simulator admin call: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("marketplace simulator admin call %s: %s: %s", url, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

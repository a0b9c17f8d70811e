package daemon

import (
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
)

// sdNotify sends state to systemd (a no-op without NOTIFY_SOCKET).
func sdNotify(log *slog.Logger, state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}

func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "0"
	}
	return strconv.FormatInt(ts.Nano()/1000, 10)
}

// health tracks whether the daemon's main loops are running.
type health struct {
	mu      sync.Mutex
	running map[string]bool
	failed  map[string]error
}

func (h *health) start(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running == nil {
		h.running, h.failed = map[string]bool{}, map[string]error{}
	}
	h.running[name] = true
}

func (h *health) end(name string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running[name] = false
	if err != nil {
		h.failed[name] = err
	}
}

// down lists the loops that stopped.
func (h *health) down() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, ok := range h.running {
		if !ok {
			out = append(out, name)
		}
	}
	return out
}

// snapshot asks the engine for its state within a deadline: an engine that
// cannot answer is stuck, and a stuck daemon must not feed the watchdog.
func (d *daemon) snapshot(timeout time.Duration) (jobs.Snapshot, bool) {
	ch := make(chan jobs.Snapshot, 1)
	go func() { ch <- d.engine.Snapshot() }()
	select {
	case s := <-ch:
		return s, true
	case <-time.After(timeout):
		return jobs.Snapshot{}, false
	}
}

// summary is the daemon's state in words (the systemd STATUS= line).
func (d *daemon) summary() string {
	snap, ok := d.snapshot(5 * time.Second)
	if !ok {
		return "job engine not responding"
	}
	return d.summarize(snap)
}

func (d *daemon) summarize(snap jobs.Snapshot) string {
	s := d.summarizeState(snap)
	client := d.mkt.Load()
	if _, paired := client.Token(); paired && !client.PairingLost() {
		if h := client.AuthHealth(); !h.OK {
			s += "; degraded: " + h.Problem
		}
	}
	if p := snap.JournalProblem; p != "" {
		// First: it is the owner's to fix, and the rest of the line
		// may be stale until it is.
		return p + " (free space in " + d.cfg.Load().Paths.StateDirectory + "); " + s
	}
	return s
}

func (d *daemon) summarizeState(snap jobs.Snapshot) string {
	if state, _, _, problem, advice, _, _ := d.keys.state(); state == keyBroken {
		if advice == "" {
			advice = problem
		}
		return "sealed key does not unseal: " + advice
	}
	client := d.mkt.Load()
	tok, paired := client.Token()
	switch {
	case client.PairingLost():
		return "pairing lost (the marketplace refused the token): run lmnt pair"
	case !paired:
		if p := d.pair.status(); p.Status == pairPending {
			return "not paired: pairing code " + p.PairingCode + " waiting for approval in the LMNT Marketplace"
		}
		return "not paired: run lmnt pair"
	}
	if problem, next := klipperProblem(d.bridge.State()); problem != "" {
		return problem + ": " + next
	}
	if a := snap.Active; a != nil {
		switch a.State {
		case jobs.Downloading:
			if a.Local {
				return "checking local job " + jobLabel(*a)
			}
			if t := d.progress.current(); t != nil && t.JobID == a.ID && !t.Done && t.Total > 0 {
				return fmt.Sprintf("downloading job %s (%d%%)", a.ID, t.Bytes*100/t.Total)
			}
			return "downloading job " + a.ID
		case jobs.Ready:
			return "starting job " + jobLabel(*a)
		case jobs.Paused:
			return fmt.Sprintf("paused job %s (%.0f%%)", jobLabel(*a), a.Progress*100)
		default:
			return fmt.Sprintf("printing job %s (%.0f%%)", jobLabel(*a), a.Progress*100)
		}
	}
	name := d.printerInfo().Name
	if name == "" {
		name = tok.PrinterID
	}
	head := "paired as " + name
	if n := len(snap.Queue); n > 0 {
		s := fmt.Sprintf("%s; Klipper ready; %d job(s) queued", head, n)
		if snap.Waiting != "" {
			s += ": " + snap.Waiting
		}
		return s
	}
	return head + "; Klipper ready; idle"
}

// percentDigits matches a summary's "(48%)", keeping the tens.
var percentDigits = regexp.MustCompile(`\((\d*)\d%\)`)

// wakeStatus has superviseStatus look again now.
func (d *daemon) wakeStatus() {
	select {
	case d.statusWake <- struct{}{}:
	default:
	}
}

// superviseStatus keeps STATUS= current, feeds the watchdog while the main
// loops are healthy, and carries out a restart-when-idle request. It runs
// on events (the engine, Klipper, the token and its refresh, a timer at
// the token's expiry); a ticker runs only to feed a watchdog (wd/4): an
// idle daemon must not wake for nothing.
func (d *daemon) superviseStatus(ctxDone interface{ Done() <-chan struct{} }) {
	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		d.log.Warn("watchdog settings unreadable", "err", err)
	}
	var tick <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd / 4)
		defer t.Stop()
		tick = t.C
	}
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	changes, unsubscribe := d.bridge.Subscribe()
	defer unsubscribe()
	last, lastLogged := "", ""
	var lastPing time.Time
	// The change channels are taken before each snapshot, never after: a
	// change between the snapshot and the next wait must wake it. The loop
	// wakes itself once at the start: a change made before it took its
	// channels (a state disk already full, say) closed none of them, and
	// STATUS= must say it without waiting for another.
	d.wakeStatus()
	client := d.mkt.Load()
	updated, authChanged := d.engine.Updated(), client.AuthChanged()
	for {
		// The summary changes by itself when the token expires.
		expiry.Stop()
		expires := (<-chan time.Time)(nil)
		if tok, ok := client.Token(); ok && time.Until(tok.Expiry) > 0 {
			expiry.Reset(time.Until(tok.Expiry) + time.Second)
			expires = expiry.C
		}
		select {
		case <-ctxDone.Done():
			return
		case <-tick:
		case <-expires:
		case <-authChanged:
		case <-updated:
		case <-changes:
		case <-d.statusWake:
		}
		client = d.mkt.Load()
		updated, authChanged = d.engine.Updated(), client.AuthChanged()
		snap, responsive := d.snapshot(5 * time.Second)
		if responsive {
			d.publishKlipperState(snap)
		}
		down := d.health.down()
		healthy := responsive && len(down) == 0
		if wd > 0 && healthy && time.Since(lastPing) >= wd/3 {
			sdNotify(d.log, "WATCHDOG=1")
			lastPing = time.Now()
		}
		var s string
		switch {
		case !responsive:
			s = "job engine not responding"
		case len(down) > 0:
			s = fmt.Sprintf("degraded: %v stopped; see journalctl -u lmntd", down)
		default:
			s = d.summarize(snap)
		}
		if s != last {
			sdNotify(d.log, "STATUS="+s)
			// The log gets a status line per 10 % of progress; every
			// percent is for STATUS= and the debug level.
			if k := percentDigits.ReplaceAllString(s, "${1}0%)"); k != lastLogged {
				d.log.Info("status", "summary", s)
				lastLogged = k
			} else {
				d.log.Debug("status", "summary", s)
			}
			last = s
		}
		if d.restartIdle.Load() && responsive && snap.Active == nil {
			d.log.Info("restarting as requested: no job is downloading, decrypting or printing")
			d.stop(ErrRestartRequested)
			return
		}
	}
}

// klipperProblem says what is wrong with Klipper, in words, and what the
// owner does about it; both are "" while Klipper is connected and ready.
// It is the same text in lmnt status, its JSON, doctor and STATUS=.
func klipperProblem(kl klipper.State) (problem, next string) {
	if !kl.Connected {
		return "Klipper is not connected",
			"is Klipper running (systemctl status klipper)? Is [encrypted_file_bridge] in printer.cfg (sudo lmnt setup)?"
	}
	if !kl.HaveStatus {
		return "", ""
	}
	// Klipper's message is several lines ("MCU 'mcu' shutdown: Timer too
	// close" then advice); the first names the cause.
	msg, _, _ := strings.Cut(strings.TrimSpace(kl.Status.Klippy.Message), "\n")
	with := func(s string) string {
		if msg != "" {
			return s + ": " + msg
		}
		return s
	}
	switch kl.Status.Klippy.State {
	case "", "ready":
		return "", ""
	case "shutdown":
		return with("Klipper is shut down"), "fix the cause, then send FIRMWARE_RESTART in the Klipper console"
	case "error":
		return with("Klipper failed to start"), "fix printer.cfg or the printer's connection, then send RESTART in the Klipper console"
	case "startup":
		return "Klipper is starting", "wait a moment; if it stays so, see Klipper's log (klippy.log)"
	}
	return with("Klipper is " + kl.Status.Klippy.State), "see Klipper's log (klippy.log)"
}

// jobLabel names a job in the status line: its title, when it has one, and
// its id.
func jobLabel(j jobs.JobInfo) string {
	if j.Name != "" {
		return fmt.Sprintf("%q (%s)", j.Name, j.ID)
	}
	return j.ID
}

// Package standin is a Klipper stand-in: a client of the bridge protocol
// that behaves like Klipper running the [encrypted_file_bridge] extra. It
// connects (and reconnects) to the daemon, greets it, reports status on
// every change and every status interval, and prints a received memfd the
// way virtual_sdcard does: it checks the seals, reopens the fd read-only,
// reads it line by line at a configurable speed and reports print_stats
// and virtual_sdcard progress. Tests drive the owner's side (pause, resume,
// cancel, errors, firmware restart, LMNT_READY, SET_GCODE_FD) through
// methods, and check what it read through PrintRecord's SHA-256.
//
// It stands in for Klipper where the real one cannot run (the job engine's
// tests, `make demo`, packaging tests); the Python extras' own tests use a
// Python model of Klipper instead.
package standin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// Print states as print_stats reports them.
const (
	StateStandby   = "standby"
	StatePrinting  = "printing"
	StatePaused    = "paused"
	StateComplete  = "complete"
	StateCancelled = "cancelled"
	StateError     = "error"
)

// ExtraVersion is the extra version the stand-in announces.
const ExtraVersion = "standin-1"

// Config configures a Standin. Only SocketPath is required.
type Config struct {
	SocketPath string
	// Speed is how fast files are read, in bytes per second; 0 reads
	// instantly.
	Speed int64
	// Logger receives the stand-in's log; nil discards.
	Logger *slog.Logger
	// KlipperVersion and Flavour go into hello (defaults "v0.13.0-standin",
	// "klipper"); ConfigFile likewise.
	KlipperVersion string
	Flavour        string
	ConfigFile     string
	// ReconnectMin and ReconnectMax bound the reconnect backoff (defaults
	// 100 ms and 5 s; the real extra uses 1 s → 30 s).
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// MinStatusGap rate-limits progress reports (default 100 ms); the last
	// state is always sent.
	MinStatusGap time.Duration
	// ProcSelfFD is where received fds are reopened (default /proc/self/fd).
	ProcSelfFD string
	// OnConsole is called with each console line the daemon shows.
	OnConsole func(string)
}

// PrintRecord is what the stand-in knows about one print, kept after it
// ends. SHA256 covers exactly the bytes it read.
type PrintRecord struct {
	RequestID      string
	JobID          string // empty for a fetched file
	Name           string
	Filename       string // what print_stats showed (the metadata stub, or Name)
	DeclaredSize   int64
	DeclaredSHA256 string
	Metadata       klipper.Metadata
	BytesRead      int64
	SHA256         string
	FilamentUsed   float64
	FinalState     string // complete, cancelled, error; "" while printing
	Message        string
}

// Standin is a fake Klipper with the bridge extra. Create with New, run
// with Run; the methods are safe for concurrent use.
type Standin struct {
	cfg Config
	log *slog.Logger

	mu             sync.Mutex
	status         klipper.Status
	job            *job
	prints         []PrintRecord
	console        []string
	conn           *net.UnixConn
	connected      bool
	statusInterval time.Duration
	fetches        map[string]chan error
	nextID         int
	lastError      *klipper.ErrorPacket
	subs           map[chan struct{}]struct{}

	wmu     sync.Mutex    // one packet write at a time
	kick    chan struct{} // status changed: the sender should report
	restart chan struct{} // reconnect now, skipping the backoff
}

type job struct {
	rec       PrintRecord
	file      *os.File
	sha       hash.Hash
	motion    motion
	size      int64
	position  int64
	state     string
	wake      chan struct{}
	finished  bool
	started   time.Time
	ended     time.Time
	printTime time.Duration // accumulated while printing
	resumedAt time.Time     // zero while paused
	paceStart time.Time
	paceBytes int64
}

// New returns a stand-in with cfg's defaults filled in.
func New(cfg Config) *Standin {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.KlipperVersion == "" {
		cfg.KlipperVersion = "v0.13.0-standin"
	}
	if cfg.Flavour == "" {
		cfg.Flavour = "klipper"
	}
	if cfg.ConfigFile == "" {
		cfg.ConfigFile = "/home/pi/printer_data/config/printer.cfg"
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(5*time.Second, cfg.ReconnectMin)
	}
	if cfg.MinStatusGap <= 0 {
		cfg.MinStatusGap = 100 * time.Millisecond
	}
	if cfg.ProcSelfFD == "" {
		cfg.ProcSelfFD = "/proc/self/fd"
	}
	k := &Standin{
		cfg:            cfg,
		log:            cfg.Logger.With("component", "klipper-standin"),
		statusInterval: 5 * time.Second,
		fetches:        make(map[string]chan error),
		subs:           make(map[chan struct{}]struct{}),
		kick:           make(chan struct{}, 1),
		restart:        make(chan struct{}, 1),
	}
	k.status = freshStatus()
	return k
}

func freshStatus() klipper.Status {
	return klipper.Status{
		Klippy:     klipper.KlippyStatus{State: "ready", Message: "Printer is ready"},
		PrintStats: klipper.PrintStats{State: StateStandby},
	}
}

// Run connects to the daemon and keeps reconnecting until ctx ends. A
// running print goes on while disconnected, as in Klipper.
func (k *Standin) Run(ctx context.Context) error {
	addr := &net.UnixAddr{Name: k.cfg.SocketPath, Net: "unixpacket"}
	backoff := k.cfg.ReconnectMin
	for ctx.Err() == nil {
		c, err := net.DialUnix("unixpacket", nil, addr)
		if err == nil {
			if k.session(ctx, c) {
				backoff = k.cfg.ReconnectMin
			}
		} else {
			k.log.Debug("connect failed", "socket", k.cfg.SocketPath, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-k.restart:
		case <-time.After(backoff):
			backoff = min(2*backoff, k.cfg.ReconnectMax)
		}
	}
	k.mu.Lock()
	if j := k.job; j != nil {
		k.finishLocked(j, StateError, "stand-in stopped")
	}
	k.mu.Unlock()
	return nil
}

// session runs one connection; it reports whether the handshake succeeded.
func (k *Standin) session(ctx context.Context, c *net.UnixConn) bool {
	defer c.Close()
	k.mu.Lock()
	k.conn = c
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.conn = nil
		wasConnected := k.connected
		k.connected = false
		for id, ch := range k.fetches {
			ch <- errors.New("disconnected before the daemon answered")
			delete(k.fetches, id)
		}
		k.notifyLocked()
		k.mu.Unlock()
		if wasConnected {
			k.log.Info("disconnected from lmntd")
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	hello := klipper.HelloPacket{
		Envelope: klipper.NewEnvelope(klipper.TypeHello, ""),
		Hello: klipper.Hello{
			ExtraVersion: ExtraVersion,
			Klipper:      klipper.KlipperInfo{Version: k.cfg.KlipperVersion, Flavour: k.cfg.Flavour, Features: []string{"standin"}},
			ConfigFile:   k.cfg.ConfigFile,
			Sections:     []string{"encrypted_file_bridge", "secure_print"},
		},
	}
	if err := k.send(c, hello); err != nil {
		return false
	}
	buf := make([]byte, klipper.MaxPacketSize+1)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return false
	}
	n, fds, err := memfd.ReceivePacket(c, buf, 0)
	if errors.Is(err, syscall.ECONNRESET) {
		// The daemon refused and closed while our hello was unread; the
		// reset is reported before its queued error packet.
		n, fds, err = memfd.ReceivePacket(c, buf, 0)
	}
	if err != nil {
		k.log.Info("no welcome from lmntd", "err", err)
		return false
	}
	memfd.CloseFDs(fds)
	var welcome klipper.WelcomePacket
	if err := json.Unmarshal(buf[:n], &welcome); err != nil || welcome.Type != klipper.TypeWelcome {
		k.noteError(buf[:n])
		return false
	}
	k.mu.Lock()
	if welcome.StatusInterval > 0 {
		k.statusInterval = time.Duration(welcome.StatusInterval) * time.Second
	}
	interval := k.statusInterval
	k.connected = true
	k.lastError = nil
	k.notifyLocked()
	k.mu.Unlock()
	k.log.Info("connected to lmntd", "daemon", welcome.DaemonVersion, "status_interval", interval)

	sessionDone := make(chan struct{})
	defer close(sessionDone)
	go k.reportStatus(c, interval, sessionDone)

	for {
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			return true
		}
		n, fds, err := memfd.ReceivePacket(c, buf, 1)
		if errors.Is(err, memfd.ErrPacketTruncated) || errors.Is(err, memfd.ErrControlTruncated) || errors.Is(err, memfd.ErrUnexpectedFDs) {
			k.log.Warn("bad packet from lmntd", "err", err)
			continue
		}
		if err != nil {
			return true
		}
		if n == 0 {
			return true
		}
		k.handle(c, buf[:n], fds)
	}
}

// reportStatus sends status at once, on every change (at most every
// MinStatusGap) and every interval.
func (k *Standin) reportStatus(c *net.UnixConn, interval time.Duration, done <-chan struct{}) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		st := k.Status()
		if err := k.send(c, klipper.StatusPacket{Envelope: klipper.NewEnvelope(klipper.TypeStatus, ""), Status: st}); err != nil {
			return
		}
		select {
		case <-done:
			return
		case <-time.After(k.cfg.MinStatusGap):
		}
		select {
		case <-done:
			return
		case <-k.kick:
		case <-ticker.C:
		}
	}
}

func (k *Standin) send(c *net.UnixConn, v any, fds ...int) error {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	return memfd.SendJSON(c, v, fds...)
}

func (k *Standin) noteError(data []byte) {
	var ep klipper.ErrorPacket
	if err := json.Unmarshal(data, &ep); err != nil || ep.Type != klipper.TypeError {
		k.log.Warn("unexpected packet from lmntd", "packet", string(data))
		return
	}
	k.mu.Lock()
	k.lastError = &ep
	k.notifyLocked()
	k.mu.Unlock()
	k.log.Warn("lmntd refused", "code", ep.Code, "message", ep.Message)
}

func (k *Standin) handle(c *net.UnixConn, data []byte, fds []int) {
	var env klipper.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		memfd.CloseFDs(fds)
		k.log.Warn("undecodable packet from lmntd", "err", err)
		return
	}
	if env.Type != klipper.TypePrint && env.Type != klipper.TypeFile {
		// Only print and file carry an fd.
		memfd.CloseFDs(fds)
		fds = nil
	}
	switch env.Type {
	case klipper.TypePrint, klipper.TypeFile:
		var fp klipper.FilePacket
		if err := json.Unmarshal(data, &fp); err != nil {
			memfd.CloseFDs(fds)
			k.answer(c, env.ID, err)
			return
		}
		err := k.load(fp, fds)
		k.answer(c, fp.ID, err)
		if env.Type == klipper.TypeFile {
			k.resolveFetch(fp.ID, err)
		}
	case klipper.TypeCancel:
		var cp klipper.CancelPacket
		if err := json.Unmarshal(data, &cp); err != nil {
			k.answer(c, env.ID, err)
			return
		}
		k.answer(c, cp.ID, k.cancelJob(cp.JobID, cp.Reason))
	case klipper.TypeConsole:
		var cp klipper.ConsolePacket
		if err := json.Unmarshal(data, &cp); err != nil {
			return
		}
		k.mu.Lock()
		k.console = append(k.console, cp.Text)
		k.notifyLocked()
		k.mu.Unlock()
		k.log.Info("console", "text", cp.Text)
		if k.cfg.OnConsole != nil {
			k.cfg.OnConsole(cp.Text)
		}
	case klipper.TypePing:
		_ = k.send(c, klipper.NewEnvelope(klipper.TypePong, env.ID))
	case klipper.TypeError:
		var ep klipper.ErrorPacket
		if err := json.Unmarshal(data, &ep); err == nil && k.resolveFetch(ep.ID, fmt.Errorf("%s: %s", ep.Code, ep.Message)) {
			line := "!! LMNT: " + ep.Message
			k.mu.Lock()
			k.console = append(k.console, line)
			k.notifyLocked()
			k.mu.Unlock()
			return
		}
		k.noteError(data)
	default:
		_ = k.send(c, klipper.ErrorPacket{Envelope: klipper.NewEnvelope(klipper.TypeError, env.ID),
			Code: klipper.CodeUnknownType, Message: "unknown packet type " + strconv.Quote(env.Type)})
	}
}

func (k *Standin) answer(c *net.UnixConn, id string, err error) {
	res := klipper.ResultPacket{Envelope: klipper.NewEnvelope(klipper.TypeResult, id), OK: err == nil}
	if err != nil {
		res.Error = err.Error()
	}
	_ = k.send(c, res)
}

// load validates a received fd and starts printing it, like the extra's
// recipe: sealed regular memfd, reopened read-only, SD not busy.
func (k *Standin) load(fp klipper.FilePacket, fds []int) error {
	if len(fds) != 1 {
		memfd.CloseFDs(fds)
		return fmt.Errorf("%s packet carries %d fds, want exactly 1", fp.Type, len(fds))
	}
	fd := fds[0]
	defer memfd.CloseFDs(fds)
	size, err := memfd.CheckSealed(fd)
	if err != nil {
		return err
	}
	if err := klipper.ValidateName(fp.Name); err != nil {
		return err
	}
	if fp.Size != 0 && fp.Size != size {
		return fmt.Errorf("file is %d bytes, the packet says %d", size, fp.Size)
	}
	// Like the extra: print_stats shows the metadata stub when there is a
	// valid one, else the virtual name.
	filename := fp.Name
	if fp.Filename != "" && klipper.ValidateFilename(fp.Filename) == nil {
		filename = fp.Filename
	}
	file, err := memfd.ReopenReadOnly(k.cfg.ProcSelfFD, fd)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.job != nil {
		file.Close()
		return errors.New("SD busy")
	}
	if k.status.Klippy.State != "ready" {
		file.Close()
		return fmt.Errorf("Klipper is not ready (%s)", k.status.Klippy.State)
	}
	now := time.Now()
	j := &job{
		rec: PrintRecord{RequestID: fp.ID, JobID: fp.JobID, Name: fp.Name, Filename: filename, DeclaredSize: fp.Size,
			DeclaredSHA256: fp.SHA256, Metadata: fp.Metadata},
		file: file, sha: sha256.New(), size: size, state: StatePrinting,
		wake: make(chan struct{}, 1), started: now, resumedAt: now, paceStart: now,
	}
	k.job = j
	// Like set_current_file: print_stats resets, then TOTAL_LAYER from the
	// metadata is applied on top.
	k.status.PrintStats = klipper.PrintStats{State: StatePrinting, Filename: filename}
	if fp.Metadata.TotalLayer > 0 {
		total, zero := fp.Metadata.TotalLayer, 0
		j.motion.totalLayer = total
		k.status.PrintStats.Info = klipper.PrintStatsInfo{TotalLayer: &total, CurrentLayer: &zero}
	}
	k.status.VirtualSDCard = klipper.VirtualSDCard{FilePath: fp.Name, IsActive: true, FileSize: size}
	k.status.ReadyConfirmed = false
	k.changedLocked()
	k.log.Info("print started", "name", fp.Name, "job", fp.JobID, "size", size)
	go k.read(j)
	return nil
}

// read is virtual_sdcard's work loop for one job.
func (k *Standin) read(j *job) {
	defer j.file.Close()
	r := bufio.NewReaderSize(j.file, 64<<10)
	for {
		k.mu.Lock()
		if j.finished {
			k.mu.Unlock()
			return
		}
		if j.state == StatePaused {
			k.mu.Unlock()
			<-j.wake
			continue
		}
		var wait time.Duration
		if k.cfg.Speed > 0 {
			due := j.paceStart.Add(time.Duration(float64(j.paceBytes) / float64(k.cfg.Speed) * float64(time.Second)))
			wait = time.Until(due)
		}
		k.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-j.wake:
				t.Stop()
			}
			continue
		}

		line, err := r.ReadBytes('\n')
		k.mu.Lock()
		if j.finished {
			k.mu.Unlock()
			return
		}
		if len(line) > 0 {
			j.sha.Write(line)
			j.position += int64(len(line))
			j.paceBytes += int64(len(line))
			j.motion.line(line)
			k.progressLocked(j)
		}
		switch {
		case errors.Is(err, io.EOF):
			k.finishLocked(j, StateComplete, "")
		case err != nil:
			k.finishLocked(j, StateError, "read error: "+err.Error())
		}
		k.mu.Unlock()
	}
}

func (k *Standin) progressLocked(j *job) {
	ps := &k.status.PrintStats
	ps.FilamentUsed = j.motion.filamentUsed
	if j.motion.totalLayer > 0 || j.motion.currentLayer > 0 {
		total, current := j.motion.totalLayer, j.motion.currentLayer
		if total > 0 {
			ps.Info.TotalLayer = &total
		}
		ps.Info.CurrentLayer = &current
	}
	vs := &k.status.VirtualSDCard
	vs.FilePosition = j.position
	if j.size > 0 {
		vs.Progress = float64(j.position) / float64(j.size)
	}
	k.changedLocked()
}

// finishLocked ends j in state (complete, cancelled, error) and records it.
func (k *Standin) finishLocked(j *job, state, message string) {
	if j.finished {
		return
	}
	j.finished = true
	j.ended = time.Now()
	if !j.resumedAt.IsZero() {
		j.printTime += j.ended.Sub(j.resumedAt)
		j.resumedAt = time.Time{}
	}
	j.state = state
	j.rec.BytesRead = j.position
	j.rec.SHA256 = hex.EncodeToString(j.sha.Sum(nil))
	j.rec.FilamentUsed = j.motion.filamentUsed
	j.rec.FinalState = state
	j.rec.Message = message
	k.prints = append(k.prints, j.rec)
	k.job = nil
	ps := &k.status.PrintStats
	ps.State = state
	ps.Message = message
	ps.TotalDuration = j.ended.Sub(j.started).Seconds()
	ps.PrintDuration = j.printTime.Seconds()
	vs := &k.status.VirtualSDCard
	vs.IsActive = false
	if state != StateComplete {
		vs.FilePath = "" // the file was reset (SDCARD_RESET_FILE)
	}
	select {
	case j.wake <- struct{}{}:
	default:
	}
	k.changedLocked()
	k.log.Info("print ended", "name", j.rec.Name, "state", state, "message", message,
		"bytes", j.position, "filament_mm", j.motion.filamentUsed)
}

func (k *Standin) cancelJob(jobID, reason string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	j := k.job
	if j == nil || (jobID != "" && j.rec.JobID != jobID) {
		return fmt.Errorf("no print of job %s is running", jobID)
	}
	k.finishLocked(j, StateCancelled, reason)
	return nil
}

// Pause pauses the running print (PAUSE on the console).
func (k *Standin) Pause() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	j := k.job
	if j == nil || j.state != StatePrinting {
		return errors.New("Print is not active")
	}
	j.state = StatePaused
	j.printTime += time.Since(j.resumedAt)
	j.resumedAt = time.Time{}
	k.status.PrintStats.State = StatePaused
	k.status.VirtualSDCard.IsActive = false
	k.changedLocked()
	return nil
}

// Resume resumes a paused print (RESUME).
func (k *Standin) Resume() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	j := k.job
	if j == nil || j.state != StatePaused {
		return errors.New("Print is not paused")
	}
	now := time.Now()
	j.state = StatePrinting
	j.resumedAt, j.paceStart, j.paceBytes = now, now, 0
	k.status.PrintStats.State = StatePrinting
	k.status.VirtualSDCard.IsActive = true
	select {
	case j.wake <- struct{}{}:
	default:
	}
	k.changedLocked()
	return nil
}

// Cancel cancels the running print from the owner's side (CANCEL_PRINT).
func (k *Standin) Cancel() error { return k.cancelJob("", "cancelled by the owner") }

// InjectError ends the running print with a Klipper error, as a failed
// command would (print_stats state error with message).
func (k *Standin) InjectError(message string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.job == nil {
		return errors.New("no print running")
	}
	k.finishLocked(k.job, StateError, message)
	return nil
}

// Shutdown puts Klipper into the shutdown state (an MCU error or M112);
// a running print ends in error.
func (k *Standin) Shutdown(message string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.job != nil {
		k.finishLocked(k.job, StateError, message)
	}
	k.status.Klippy = klipper.KlippyStatus{State: "shutdown", Message: message}
	k.changedLocked()
}

// Disconnect drops the bridge connection the way a broken socket does:
// the print goes on and the stand-in reconnects at once, like the extra.
func (k *Standin) Disconnect() {
	k.mu.Lock()
	c := k.conn
	k.mu.Unlock()
	k.reconnect(c)
}

// reconnect closes the bridge connection c (if any) and has the run loop
// connect again at once.
func (k *Standin) reconnect(c *net.UnixConn) {
	if c != nil {
		c.Close()
	}
	select {
	case k.restart <- struct{}{}:
	default:
	}
}

// FirmwareRestart does what FIRMWARE_RESTART does to the bridge: Klipper
// drops its socket and a fresh Klipper (standby, ready) reconnects. A
// running print is lost.
func (k *Standin) FirmwareRestart() {
	k.mu.Lock()
	if k.job != nil {
		k.finishLocked(k.job, StateError, "firmware restart")
	}
	k.status = freshStatus()
	c := k.conn
	k.changedLocked()
	k.mu.Unlock()
	k.reconnect(c)
}

// SendReady runs LMNT_READY: the owner confirms the bed is clear.
func (k *Standin) SendReady(args map[string]any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return err
	}
	k.mu.Lock()
	c := k.conn
	connected := k.connected
	if connected {
		k.status.ReadyConfirmed = true
		k.changedLocked()
	}
	k.mu.Unlock()
	if !connected {
		return errors.New("not connected to lmntd")
	}
	return k.send(c, klipper.CommandPacket{Envelope: klipper.NewEnvelope(klipper.TypeCommand, ""),
		Command: klipper.Command{Name: "LMNT_READY", Args: raw}})
}

// Fetch runs SET_GCODE_FD FILENAME=name: it asks the daemon for the held
// file and prints it. An unknown or expired name is an error, also shown on
// the console like the extra does.
func (k *Standin) Fetch(ctx context.Context, name string) error {
	k.mu.Lock()
	c := k.conn
	if !k.connected {
		k.mu.Unlock()
		return errors.New("not connected to lmntd")
	}
	k.nextID++
	id := "k" + strconv.Itoa(k.nextID)
	ch := make(chan error, 1)
	k.fetches[id] = ch
	k.mu.Unlock()
	if err := k.send(c, klipper.FetchPacket{Envelope: klipper.NewEnvelope(klipper.TypeFetch, id), Name: name}); err != nil {
		k.resolveFetch(id, err)
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		k.mu.Lock()
		delete(k.fetches, id)
		k.mu.Unlock()
		return ctx.Err()
	}
}

func (k *Standin) resolveFetch(id string, err error) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch, ok := k.fetches[id]
	if ok {
		delete(k.fetches, id)
		ch <- err
	}
	return ok
}

// Status is what the stand-in would report now.
func (k *Standin) Status() klipper.Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.statusLocked()
}

func (k *Standin) statusLocked() klipper.Status {
	st := k.status
	if j := k.job; j != nil {
		now := time.Now()
		printTime := j.printTime
		if !j.resumedAt.IsZero() {
			printTime += now.Sub(j.resumedAt)
		}
		st.PrintStats.TotalDuration = now.Sub(j.started).Seconds()
		st.PrintStats.PrintDuration = printTime.Seconds()
	}
	if p := st.PrintStats.Info.TotalLayer; p != nil {
		v := *p
		st.PrintStats.Info.TotalLayer = &v
	}
	if p := st.PrintStats.Info.CurrentLayer; p != nil {
		v := *p
		st.PrintStats.Info.CurrentLayer = &v
	}
	return st
}

// Connected reports whether the handshake with the daemon is done.
func (k *Standin) Connected() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.connected
}

// LastError is the last error packet the daemon sent outside a fetch
// (forbidden, unsupported_version…), or nil.
func (k *Standin) LastError() *klipper.ErrorPacket {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lastError == nil {
		return nil
	}
	e := *k.lastError
	return &e
}

// Prints returns the records of every print that ended, oldest first.
func (k *Standin) Prints() []PrintRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.prints)
}

// ConsoleLines returns every console line shown so far.
func (k *Standin) ConsoleLines() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.console)
}

// Subscribe returns a coalescing channel woken on every change (status,
// connection, console, prints) and a function to unsubscribe.
func (k *Standin) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	k.mu.Lock()
	k.subs[ch] = struct{}{}
	k.mu.Unlock()
	return ch, func() {
		k.mu.Lock()
		delete(k.subs, ch)
		k.mu.Unlock()
	}
}

// WaitFor waits until cond holds for the stand-in and returns the status
// it held for.
func (k *Standin) WaitFor(ctx context.Context, cond func(klipper.Status) bool) (klipper.Status, error) {
	ch, unsubscribe := k.Subscribe()
	defer unsubscribe()
	for {
		st := k.Status()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, fmt.Errorf("stand-in: condition not reached: %w (print state %q, klippy %q, connected %v)",
				ctx.Err(), st.PrintStats.State, st.Klippy.State, k.Connected())
		}
	}
}

// WaitConnected waits until Connected() == want.
func (k *Standin) WaitConnected(ctx context.Context, want bool) error {
	_, err := k.WaitFor(ctx, func(klipper.Status) bool { return k.Connected() == want })
	return err
}

// changedLocked wakes the status sender and the subscribers.
func (k *Standin) changedLocked() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
	k.notifyLocked()
}

func (k *Standin) notifyLocked() {
	for ch := range k.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

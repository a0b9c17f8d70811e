// Package klipper is the daemon's side of the bridge to Klipper: it serves
// the bridge protocol (docs/bridge-protocol.md, v1) to the
// [encrypted_file_bridge] extra running inside Klipper, admits only Klipper's
// service user (SO_PEERCRED), hands sealed memfds to Klipper to print, and
// keeps the model of what Klipper is doing that the job engine reads.
//
// One extra connection is live at a time: a newer connection from an
// allowed uid that completes the handshake replaces the old one (Klipper
// restarted and reconnected before the old socket was noticed as dead).
package klipper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/internal/testhook"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

// Errors returned by the Server's requests. Use errors.Is.
var (
	// ErrNotConnected: no extra has completed the handshake.
	ErrNotConnected = errors.New("klipper: bridge extra not connected")
	// ErrDisconnected: the extra went away before answering.
	ErrDisconnected = errors.New("klipper: bridge extra disconnected before answering")
	// ErrBusy: a print is already being handed over, or Klipper reports an
	// active print.
	ErrBusy = errors.New("klipper: printer is busy")
	// ErrRejected: the extra answered the request with ok=false or an error
	// packet; the RejectedError carries its message.
	ErrRejected = errors.New("klipper: extra rejected the request")
	// ErrUnsealed: the memfd handed to Print or Hold lacks the content seals.
	ErrUnsealed = errors.New("klipper: memfd is not sealed")
	// ErrServerStopped: Serve has returned.
	ErrServerStopped = errors.New("klipper: bridge server stopped")
)

// RejectedError is the extra's refusal of a request, with its own words.
type RejectedError struct {
	Op      string // "print", "cancel", …
	ID      string // request id
	Code    string // error code when the extra answered with an error packet
	Message string
}

func (e *RejectedError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("klipper: %s %s rejected by the extra: %s: %s", e.Op, e.ID, e.Code, e.Message)
	}
	return fmt.Sprintf("klipper: %s %s rejected by the extra: %s", e.Op, e.ID, e.Message)
}

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

// Options configure a Server. Zero values get sensible defaults.
type Options struct {
	// AllowedUIDs are the uids that may connect (Klipper's service user).
	// Empty means only the daemon's own uid, which is right only in tests.
	AllowedUIDs []uint32
	// Logger receives the server's log; nil discards.
	Logger *slog.Logger
	// StatusInterval is the period the extra is told to report status at
	// (welcome.status_interval). Default 5 s; whole seconds on the wire.
	StatusInterval time.Duration
	// IdleStatusInterval is the extra's heartbeat while Klipper prints
	// nothing (welcome.idle_status_interval); changes are sent at once
	// anyway. Default 60 s, at least StatusInterval.
	IdleStatusInterval time.Duration
	// IdleTimeout closes a connection that sent nothing for this long (a
	// hung or vanished Klipper). Default 2×IdleStatusInterval + 15 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the wait for hello. Default 10 s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one packet send. Default 5 s.
	WriteTimeout time.Duration
	// HoldTTL is how long a held file waits for its fetch. Default 15 min.
	HoldTTL time.Duration
	// DaemonVersion goes into welcome. Default version.Version.
	DaemonVersion string
	// Now is the clock (for held-file expiry). Default time.Now.
	Now func() time.Time
	// OnEvent, when set, is called for every connection, rejection, status,
	// result and fetch, from the server's goroutines. It must not block.
	// The job engine normally uses State and Subscribe instead; this is for
	// audit trails and test tools.
	OnEvent func(Event)
}

// EventKind names what happened.
type EventKind string

// Event kinds passed to Options.OnEvent.
const (
	EventConnected    EventKind = "connected"    // Hello set
	EventDisconnected EventKind = "disconnected" // Reason set
	EventRejected     EventKind = "rejected"     // UID, Reason set
	EventStatus       EventKind = "status"       // Status set
	EventResult       EventKind = "result"       // Result set
	EventFetch        EventKind = "fetch"        // Name, Served set
)

// Event is one thing the server saw.
type Event struct {
	Kind   EventKind
	Hello  *Hello
	Status *Status
	Result *Result
	UID    uint32
	Name   string
	Served bool
	Reason string
}

// Result is the extra's answer to a print, file, or cancel.
type Result struct {
	ID    string
	Op    string // "print", "file" or "cancel"
	JobID string // for print and cancel
	Name  string // for print and file
	OK    bool
	Error string
}

// Peer identifies the connected extra's process.
type Peer struct {
	UID uint32
	GID uint32
	PID int32
}

// State is the server's view of Klipper. The zero value means no extra has
// connected yet.
type State struct {
	Connected      bool
	Peer           Peer
	ConnectedAt    time.Time
	DisconnectedAt time.Time
	Hello          Hello // of the current (or last) connection
	// HaveStatus is false until the current connection sent its first
	// status. After a disconnect the last Status is kept (HaveStatus stays
	// true) so the engine can see what Klipper last reported; Connected
	// tells whether it is live.
	HaveStatus bool
	Status     Status
	StatusAt   time.Time
}

// Server is the bridge server. Create it with NewServer, run it with Serve.
type Server struct {
	opts     Options
	log      *slog.Logger
	commands chan Command

	// lifecycle serialises activate and deactivate with their events, so
	// that OnEvent sees connected and disconnected in the order the state
	// changed (a replaced connection's end could otherwise be told after
	// its successor's start).
	lifecycle sync.Mutex

	mu      sync.Mutex
	state   State
	active  *conn
	conns   map[*conn]struct{}
	subs    map[chan struct{}]struct{}
	held    map[string]*heldFile // Hold's files, by name, until fetched
	handing bool                 // a Print is between send and result
	daemon  DaemonState
	nextID  uint64
	stopped bool
	serving bool
}

// heldFile is a file Hold keeps for the macro path's fetch.
type heldFile struct {
	file    *memfd.File
	packet  FilePacket
	expires time.Time
	timer   *time.Timer
}

// NewServer returns a server with opts, defaults filled in.
func NewServer(opts Options) *Server {
	if len(opts.AllowedUIDs) == 0 {
		opts.AllowedUIDs = []uint32{uint32(os.Getuid())}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = 5 * time.Second
	}
	if opts.StatusInterval < time.Second {
		opts.StatusInterval = time.Second
	}
	if opts.IdleStatusInterval <= 0 {
		opts.IdleStatusInterval = 60 * time.Second
	}
	opts.IdleStatusInterval = max(opts.IdleStatusInterval, opts.StatusInterval)
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2*opts.IdleStatusInterval + 15*time.Second
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	if opts.HoldTTL <= 0 {
		opts.HoldTTL = 15 * time.Minute
	}
	if opts.DaemonVersion == "" {
		opts.DaemonVersion = version.Version
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{
		opts:     opts,
		log:      opts.Logger, // the caller names the component
		commands: make(chan Command, 16),
		conns:    make(map[*conn]struct{}),
		subs:     make(map[chan struct{}]struct{}),
		held:     make(map[string]*heldFile),
	}
}

// Listen creates the bridge's SEQPACKET socket at path with permissions
// perm, replacing a stale socket left by a previous run (but never another
// kind of file). Under systemd the socket unit creates it instead and the
// listener comes from socket activation.
func Listen(path string, perm os.FileMode) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("klipper: listen %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("klipper: remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("klipper: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		l.Close()
		return nil, fmt.Errorf("klipper: chmod %s: %w", path, err)
	}
	return l, nil
}

// Serve accepts extra connections on l until ctx ends, then closes l, every
// connection and every held file. It returns nil after a cancelled ctx and
// the accept error otherwise. A Server serves once.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	s.mu.Lock()
	if s.serving || s.stopped {
		s.mu.Unlock()
		return errors.New("klipper: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	s.log.Info("bridge listening", "addr", l.Addr().String(), "allowed_uids", s.opts.AllowedUIDs)

	var wg sync.WaitGroup
	var serveErr error
	acceptRetry := backoff.Backoff{Min: 5 * time.Millisecond, Max: time.Second}
	for {
		uc, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				// Out of descriptors or memory: wait, do not spin.
				wait := acceptRetry.Next()
				s.log.Warn("bridge accept failed, retrying", "err", err, "backoff", wait)
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
				continue
			}
			serveErr = fmt.Errorf("klipper: accept: %w", err)
			break
		}
		acceptRetry.Reset()
		c := &conn{s: s, uc: uc, pending: make(map[string]*pendingRequest), done: make(chan struct{})}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, c)
		}()
	}
	cancel()
	s.mu.Lock()
	s.stopped = true
	for c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	wg.Wait()

	s.mu.Lock()
	for name, h := range s.held {
		s.dropHeldLocked(name, h)
	}
	s.mu.Unlock()
	return serveErr
}

// State returns a snapshot of what the server knows about Klipper.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Hello.Klipper.Features = slices.Clone(st.Hello.Klipper.Features)
	st.Hello.Sections = slices.Clone(st.Hello.Sections)
	st.Status.PrintStats.Info = cloneInfo(st.Status.PrintStats.Info)
	return st
}

func cloneInfo(in PrintStatsInfo) PrintStatsInfo {
	var out PrintStatsInfo
	if in.TotalLayer != nil {
		v := *in.TotalLayer
		out.TotalLayer = &v
	}
	if in.CurrentLayer != nil {
		v := *in.CurrentLayer
		out.CurrentLayer = &v
	}
	return out
}

// Subscribe returns a channel that receives a value after State changed
// (connect, disconnect, status). Notifications coalesce: a slow reader
// gets one wake-up for many changes and then reads State. The server never
// blocks on it. Call the returned function to unsubscribe.
func (s *Server) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, ch)
			s.mu.Unlock()
		})
	}
}

// Commands delivers the lmnt G-code commands the owner ran in Klipper
// (LMNT_READY). The buffer holds 16; when the reader falls behind further,
// new commands are dropped and logged rather than blocking the bridge.
func (s *Server) Commands() <-chan Command { return s.commands }

// PrintRequest describes a job to print.
type PrintRequest struct {
	JobID string
	// Name is the virtual file name; default VirtualName(JobID). Only
	// [A-Za-z0-9._-].
	Name string
	// Filename, when set, is what print_stats shows instead of Name: the
	// job's metadata stub (ValidateFilename).
	Filename string
	Title    string
	// Metadata is what the G-code gate learned about the file; nil for
	// nothing. The print packet carries the part the extra uses.
	Metadata *gcode.Metadata
}

// Print hands the sealed memfd f to Klipper to print and waits for the
// extra's result (bounded by ctx). The caller keeps ownership of f and may
// close it once Print returns: Klipper holds its own descriptor. Errors:
// ErrInvalidName, ErrUnsealed, ErrNotConnected, ErrBusy, ErrDisconnected,
// a *RejectedError (errors.Is ErrRejected), or ctx's error.
func (s *Server) Print(ctx context.Context, req PrintRequest, f *memfd.File) error {
	if req.JobID == "" {
		return errors.New("klipper: print: empty job id")
	}
	name := req.Name
	if name == "" {
		name = VirtualName(req.JobID)
	}
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("klipper: print: %w", err)
	}
	if req.Filename != "" {
		if err := ValidateFilename(req.Filename); err != nil {
			return fmt.Errorf("klipper: print: %w", err)
		}
	}
	pkt, err := describeFile(f, name, packetMetadata(req.Metadata))
	if err != nil {
		return fmt.Errorf("klipper: print %s: %w", req.JobID, err)
	}
	pkt.Filename, pkt.Title = req.Filename, req.Title
	c, err := s.activeConn()
	if err != nil {
		return err
	}
	s.mu.Lock()
	busy := s.handing || printerBusy(s.state)
	if !busy {
		s.handing = true
	}
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: cannot start job %s", ErrBusy, req.JobID)
	}
	defer func() {
		s.mu.Lock()
		s.handing = false
		s.mu.Unlock()
	}()

	id := s.newID()
	pkt.Envelope = NewEnvelope(TypePrint, id)
	pkt.JobID = req.JobID
	p := c.register(id, TypePrint, req.JobID, name)
	defer c.unregister(id)
	if err := c.send(pkt, f.Fd()); err != nil {
		return fmt.Errorf("klipper: print %s: %w", req.JobID, err)
	}
	s.log.Info("print handed to Klipper", "job", req.JobID, "name", name, "size", pkt.Size, "id", id)
	return c.wait(ctx, p)
}

func printerBusy(st State) bool {
	if !st.HaveStatus {
		return false
	}
	ps := st.Status.PrintStats.State
	return st.Status.VirtualSDCard.IsActive || ps == "printing" || ps == "paused"
}

// describeFile checks f's seals and builds the file description for the
// print/file packet, with the SHA-256 of the sealed content: the seals
// guarantee it is what Klipper will read.
func describeFile(f *memfd.File, name string, meta Metadata) (FilePacket, error) {
	if f == nil {
		return FilePacket{}, errors.New("no memfd")
	}
	seals, err := f.Seals()
	if err != nil {
		return FilePacket{}, err
	}
	if seals&memfd.ContentSeals != memfd.ContentSeals && !testhook.SkipSealCheck.Load() {
		return FilePacket{}, fmt.Errorf("%w (seals %#x)", ErrUnsealed, seals)
	}
	size, err := f.Size()
	if err != nil {
		return FilePacket{}, err
	}
	sha, err := hashFD(f.Fd(), size)
	if err != nil {
		return FilePacket{}, err
	}
	return FilePacket{Name: name, Size: size, SHA256: sha, Metadata: meta}, nil
}

// Hold keeps f for the macro path: the extra fetches it by name when the
// owner runs SET_GCODE_FD FILENAME=<name>. The server takes ownership of f
// on success and closes it when it is served (once), withdrawn, expired
// (Options.HoldTTL) or the server stops; on error the caller keeps it.
// Holding a name again replaces the earlier file.
func (s *Server) Hold(name string, f *memfd.File, meta Metadata) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("klipper: hold: %w", err)
	}
	pkt, err := describeFile(f, name, meta)
	if err != nil {
		return fmt.Errorf("klipper: hold %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrServerStopped
	}
	if old, ok := s.held[name]; ok {
		s.dropHeldLocked(name, old)
	}
	h := &heldFile{file: f, packet: pkt, expires: s.opts.Now().Add(s.opts.HoldTTL)}
	h.timer = time.AfterFunc(s.opts.HoldTTL, func() { s.expireHeld(name, h) })
	s.held[name] = h
	s.log.Info("file held for fetch", "name", name, "size", pkt.Size, "ttl", s.opts.HoldTTL)
	return nil
}

// Withdraw drops a held file and closes it. It reports whether name was
// held.
func (s *Server) Withdraw(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[name]
	if ok {
		s.dropHeldLocked(name, h)
	}
	return ok
}

func (s *Server) expireHeld(name string, h *heldFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[name] == h {
		s.log.Info("held file expired", "name", name)
		s.dropHeldLocked(name, h)
	}
}

func (s *Server) dropHeldLocked(name string, h *heldFile) {
	delete(s.held, name)
	h.timer.Stop()
	if err := h.file.Close(); err != nil {
		s.log.Warn("closing held file", "name", name, "err", err)
	}
}

// takeHeld removes and returns the held file called name, or nil when there
// is none or it expired.
func (s *Server) takeHeld(name string) *heldFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[name]
	if !ok {
		return nil
	}
	if !s.opts.Now().Before(h.expires) {
		s.dropHeldLocked(name, h)
		return nil
	}
	delete(s.held, name)
	h.timer.Stop()
	return h
}

// Cancel asks Klipper to cancel the print of jobID and waits for the result.
// The extra refuses (RejectedError) when the current print is not that job.
func (s *Server) Cancel(ctx context.Context, jobID, reason string) error {
	c, err := s.activeConn()
	if err != nil {
		return err
	}
	id := s.newID()
	p := c.register(id, TypeCancel, jobID, "")
	defer c.unregister(id)
	if err := c.send(CancelPacket{Envelope: NewEnvelope(TypeCancel, id), JobID: jobID, Reason: reason}); err != nil {
		return fmt.Errorf("klipper: cancel %s: %w", jobID, err)
	}
	s.log.Info("cancel sent to Klipper", "job", jobID, "reason", reason, "id", id)
	return c.wait(ctx, p)
}

// MaxConsoleLen bounds one console line.
const MaxConsoleLen = 512

// Console shows text on Klipper's console. The text is made one line
// (control characters become spaces), prefixed "LMNT: " unless it already
// starts with ConsolePrefix, and cut to MaxConsoleLen. Without a connected
// extra the line is dropped and ErrNotConnected returned.
func (s *Server) Console(text string) error {
	c, err := s.activeConn()
	if err != nil {
		return err
	}
	return c.send(ConsolePacket{Envelope: NewEnvelope(TypeConsole, ""), Text: ConsoleLine(text)})
}

// ConsoleLine is the sanitised form of text that Console sends.
func ConsoleLine(text string) string {
	b := make([]rune, 0, len(text)+6)
	for _, r := range text {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			r = ' '
		}
		b = append(b, r)
	}
	line := string(b)
	if len(line) < len(ConsolePrefix) || line[:len(ConsolePrefix)] != ConsolePrefix {
		line = ConsolePrefix + " " + line
	}
	if len(line) > MaxConsoleLen {
		cut := MaxConsoleLen
		for cut > 0 && (line[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		line = line[:cut]
	}
	return line
}

// SetDaemonState updates what the extras' get_status() shows about lmntd
// (pairing code, waiting for LMNT_READY, the job's title, last error). It
// is sent now when it changed, and to every extra after its welcome.
func (s *Server) SetDaemonState(st DaemonState) {
	s.mu.Lock()
	same := s.daemon.PairingCode == st.PairingCode && s.daemon.WaitingForReady == st.WaitingForReady &&
		s.daemon.LastError == st.LastError && (s.daemon.Job == nil) == (st.Job == nil) &&
		(st.Job == nil || *s.daemon.Job == *st.Job)
	if st.Job != nil {
		j := *st.Job
		st.Job = &j
	}
	s.daemon = st
	c := s.active
	s.mu.Unlock()
	if same || c == nil || !c.welcomed.Load() {
		return // a connection not welcomed yet gets it right after
	}
	if err := c.send(s.statePacket()); err != nil {
		s.log.Debug("sending lmntd's state to the extra", "err", err)
	}
}

func (s *Server) statePacket() StatePacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.daemon
	if st.Job != nil {
		j := *st.Job
		st.Job = &j
	}
	return StatePacket{Envelope: NewEnvelope(TypeState, ""), DaemonState: st}
}

// Ping checks the extra is alive and returns the round-trip time.
func (s *Server) Ping(ctx context.Context) (time.Duration, error) {
	c, err := s.activeConn()
	if err != nil {
		return 0, err
	}
	id := s.newID()
	p := c.register(id, TypePing, "", "")
	defer c.unregister(id)
	start := time.Now()
	if err := c.send(NewEnvelope(TypePing, id)); err != nil {
		return 0, fmt.Errorf("klipper: ping: %w", err)
	}
	if err := c.wait(ctx, p); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (s *Server) activeConn() (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrServerStopped
	}
	if s.active == nil {
		return nil, ErrNotConnected
	}
	return s.active, nil
}

func (s *Server) newID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return "d" + strconv.FormatUint(s.nextID, 10)
}

func (s *Server) emit(ev Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(ev)
	}
}

// notifyLocked wakes every subscriber without blocking.
func (s *Server) notifyLocked() {
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Server) allowed(uid uint32) bool {
	return slices.Contains(s.opts.AllowedUIDs, uid)
}

// hashFD digests size bytes of fd with pread, leaving its offset alone.
func hashFD(fd int, size int64) (string, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var off int64
	for off < size {
		n, err := unix.Pread(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("hash memfd: %w", err)
		}
		if n == 0 {
			return "", fmt.Errorf("hash memfd: %w at %d of %d bytes", io.ErrUnexpectedEOF, off, size)
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

package klipper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// maxBadPackets is how many malformed packets in a row a connection may
// send before it is treated as hostile and closed.
const maxBadPackets = 32

// conn is one extra connection.
type conn struct {
	s    *Server
	uc   *net.UnixConn
	peer Peer

	wmu sync.Mutex // one packet write at a time, with its deadline
	// welcomed: the welcome is out, so state packets may follow it.
	welcomed atomic.Bool

	mu      sync.Mutex
	pending map[string]*pendingRequest

	done      chan struct{}
	closeOnce sync.Once
}

type pendingRequest struct {
	op, jobID, name string
	answer          chan answer // buffered 1
}

type answer struct {
	ok      bool
	code    string
	message string
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.uc.Close()
	})
}

func (c *conn) send(v any, fds ...int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.uc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout)); err != nil {
		return fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	if err := memfd.SendJSON(c.uc, v, fds...); err != nil {
		select {
		case <-c.done:
			return fmt.Errorf("%w: %v", ErrDisconnected, err)
		default:
		}
		return err
	}
	return nil
}

func (c *conn) sendError(id, code, message string) {
	pkt := ErrorPacket{Envelope: NewEnvelope(TypeError, id), Code: code, Message: message}
	if code == CodeUnsupportedVersion {
		pkt.Supported = []int{ProtocolVersion}
	}
	if err := c.send(pkt); err != nil {
		c.s.log.Debug("sending error packet failed", "code", code, "err", err)
	}
}

// lingerAfterRefusal bounds how long a refused connection is drained.
const lingerAfterRefusal = time.Second

// refuse sends a final error and closes the connection so that the peer
// reliably reads it: closing a unix socket with unread data makes the
// peer's next read fail with ECONNRESET before it sees the queued error, so
// the server half-closes and drains what the peer still sends (bounded)
// before closing.
func (c *conn) refuse(id, code, message string) {
	c.sendError(id, code, message)
	if err := c.uc.CloseWrite(); err != nil {
		c.close()
		return
	}
	if err := c.uc.SetReadDeadline(time.Now().Add(lingerAfterRefusal)); err != nil {
		c.close()
		return
	}
	buf := make([]byte, 512)
	for {
		n, fds, err := memfd.ReceivePacket(c.uc, buf, memfd.MaxFDsPerPacket)
		memfd.CloseFDs(fds)
		if n == 0 && err == nil || err != nil && !errors.Is(err, memfd.ErrPacketTruncated) {
			break
		}
	}
	c.close()
}

func (c *conn) register(id, op, jobID, name string) *pendingRequest {
	p := &pendingRequest{op: op, jobID: jobID, name: name, answer: make(chan answer, 1)}
	c.mu.Lock()
	c.pending[id] = p
	c.mu.Unlock()
	return p
}

func (c *conn) unregister(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// answerPending delivers an answer to the request id and returns it, or nil
// when no request with that id is waiting.
func (c *conn) answerPending(id string, a answer) *pendingRequest {
	c.mu.Lock()
	p := c.pending[id]
	c.mu.Unlock()
	if p != nil {
		select {
		case p.answer <- a:
		default: // answered twice: keep the first
		}
	}
	return p
}

func (c *conn) wait(ctx context.Context, p *pendingRequest) error {
	var gaveUp error
	select {
	case a := <-p.answer:
		return p.result(a)
	case <-c.done:
		gaveUp = ErrDisconnected
	case <-ctx.Done():
		gaveUp = fmt.Errorf("klipper: waiting for the answer to %s: %w", p.op, ctx.Err())
	}
	// An answer that arrived before the connection closed or the deadline
	// passed still counts: select picks at random among ready cases, and a
	// waiter scheduled late would otherwise call an answered request lost.
	select {
	case a := <-p.answer:
		return p.result(a)
	default:
		return gaveUp
	}
}

func (p *pendingRequest) result(a answer) error {
	if a.ok {
		return nil
	}
	return &RejectedError{Op: p.op, ID: p.jobID, Code: a.code, Message: a.message}
}

// handle runs one connection from accept to close.
func (s *Server) handle(ctx context.Context, c *conn) {
	defer func() {
		c.close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	go func() {
		select {
		case <-ctx.Done():
			c.close()
		case <-c.done:
		}
	}()

	cred, err := memfd.PeerCred(c.uc)
	if err != nil {
		s.log.Warn("bridge peer credentials unavailable, closing", "err", err)
		return
	}
	c.peer = Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	if !s.allowed(cred.Uid) {
		s.log.Warn("bridge connection refused: uid not allowed", "uid", cred.Uid, "pid", cred.Pid, "allowed_uids", s.opts.AllowedUIDs)
		c.refuse("", CodeForbidden, fmt.Sprintf("uid %d may not use the lmntd bridge", cred.Uid))
		s.emit(Event{Kind: EventRejected, UID: cred.Uid, Reason: "uid not allowed"})
		return
	}

	buf := make([]byte, MaxPacketSize+1)
	hello, ok := s.handshake(c, buf)
	if !ok {
		return
	}
	// Active before the welcome goes out: an extra that has its welcome can
	// be sent a print at once.
	s.activate(c, hello)
	welcome := WelcomePacket{
		Envelope:           NewEnvelope(TypeWelcome, ""),
		DaemonVersion:      s.opts.DaemonVersion,
		StatusInterval:     int(s.opts.StatusInterval / time.Second),
		IdleStatusInterval: int(s.opts.IdleStatusInterval / time.Second),
	}
	if err := c.send(welcome); err != nil {
		s.deactivate(c, "sending welcome failed: "+err.Error())
		return
	}
	c.welcomed.Store(true)
	// The extra starts from the zero state: only news is sent.
	if st := s.statePacket(); st.PairingCode != "" || st.WaitingForReady || st.Job != nil || st.LastError != "" {
		if err := c.send(st); err != nil {
			s.deactivate(c, "sending lmntd's state failed: "+err.Error())
			return
		}
	}
	reason := s.readLoop(c, buf)
	s.deactivate(c, reason)
}

// readPacket reads one packet with a deadline. fds never come from the
// extra; any it sends are closed and reported as a bad packet.
func (c *conn) readPacket(buf []byte, timeout time.Duration) (data []byte, env Envelope, badReason string, err error) {
	if err := c.uc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, env, "", err
	}
	n, fds, err := memfd.ReceivePacket(c.uc, buf, memfd.MaxFDsPerPacket)
	memfd.CloseFDs(fds)
	switch {
	case errors.Is(err, memfd.ErrPacketTruncated):
		return nil, env, fmt.Sprintf("packet larger than %d bytes", MaxPacketSize), nil
	case errors.Is(err, memfd.ErrControlTruncated), errors.Is(err, memfd.ErrUnexpectedFDs):
		return nil, env, "file descriptors are not accepted from the extra", nil
	case errors.Is(err, io.EOF):
		return nil, env, "", errPeerClosed
	case err != nil:
		return nil, env, "", err
	case n == 0:
		// A zero-length SEQPACKET read is the peer's orderly shutdown.
		return nil, env, "", errPeerClosed
	case n > MaxPacketSize:
		return nil, env, fmt.Sprintf("packet larger than %d bytes", MaxPacketSize), nil
	case len(fds) > 0:
		return nil, env, "file descriptors are not accepted from the extra", nil
	}
	data = buf[:n]
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, env, "not a JSON object: " + err.Error(), nil
	}
	if env.Type == "" {
		return nil, env, "missing type", nil
	}
	return data, env, "", nil
}

var errPeerClosed = errors.New("extra closed the connection")

func (s *Server) handshake(c *conn, buf []byte) (Hello, bool) {
	deadline := time.Now().Add(s.opts.HandshakeTimeout)
	bad := 0
	for {
		data, env, badReason, err := c.readPacket(buf, time.Until(deadline))
		if err != nil {
			s.log.Info("bridge connection ended before hello", "uid", c.peer.UID, "err", err)
			return Hello{}, false
		}
		if badReason != "" {
			if bad++; bad > maxBadPackets {
				return Hello{}, false
			}
			c.sendError(env.ID, CodeBadPacket, badReason)
			continue
		}
		if env.V != ProtocolVersion {
			s.refuseVersion(c, env)
			return Hello{}, false
		}
		if env.Type != TypeHello {
			if bad++; bad > maxBadPackets {
				return Hello{}, false
			}
			c.sendError(env.ID, CodeHelloRequired, "send hello first")
			continue
		}
		var hp HelloPacket
		if err := json.Unmarshal(data, &hp); err != nil {
			c.sendError(env.ID, CodeBadPacket, "bad hello: "+err.Error())
			continue
		}
		return hp.Hello, true
	}
}

func (s *Server) refuseVersion(c *conn, env Envelope) {
	s.log.Warn("bridge extra speaks an unsupported protocol version", "version", env.V, "supported", ProtocolVersion, "uid", c.peer.UID)
	c.refuse(env.ID, CodeUnsupportedVersion, fmt.Sprintf("protocol version %d is not supported; this lmntd speaks %d", env.V, ProtocolVersion))
	s.emit(Event{Kind: EventRejected, UID: c.peer.UID, Reason: fmt.Sprintf("unsupported protocol version %d", env.V)})
}

// activate makes c the live connection, replacing an older one.
func (s *Server) activate(c *conn, hello Hello) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.mu.Lock()
	old := s.active
	s.active = c
	now := time.Now()
	if old != nil {
		s.state.DisconnectedAt = now
	}
	s.state.Connected = true
	s.state.Peer = c.peer
	s.state.ConnectedAt = now
	s.state.Hello = hello
	s.state.HaveStatus = false
	s.state.Status = Status{}
	s.state.StatusAt = time.Time{}
	s.notifyLocked()
	s.mu.Unlock()
	if old != nil {
		// Every connected event gets its disconnected, also on replacement.
		s.log.Info("new bridge connection replaces the old one (Klipper restarted?)", "old_pid", old.peer.PID, "new_pid", c.peer.PID)
		old.close()
		s.emit(Event{Kind: EventDisconnected, Reason: "replaced by a new connection"})
	}
	s.log.Info("Klipper extra connected", "uid", c.peer.UID, "pid", c.peer.PID,
		"klipper", hello.Klipper.Version, "flavour", hello.Klipper.Flavour,
		"extra", hello.ExtraVersion, "config", hello.ConfigFile)
	h := hello
	s.emit(Event{Kind: EventConnected, Hello: &h})
}

// deactivate ends c. The state shows it disconnected before c's pending
// requests fail with ErrDisconnected: a caller told so must not read a
// State that still shows the connection (and its last status) as live.
func (s *Server) deactivate(c *conn, reason string) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.mu.Lock()
	wasActive := s.active == c
	if wasActive {
		s.active = nil
		s.state.Connected = false
		s.state.DisconnectedAt = time.Now()
		s.notifyLocked()
	}
	s.mu.Unlock()
	c.close()
	if wasActive {
		s.log.Info("Klipper extra disconnected", "reason", reason, "pid", c.peer.PID)
		s.emit(Event{Kind: EventDisconnected, Reason: reason})
	}
}

// readLoop serves packets until the connection ends and says why it did.
func (s *Server) readLoop(c *conn, buf []byte) string {
	bad := 0
	for {
		data, env, badReason, err := c.readPacket(buf, s.opts.IdleTimeout)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, errPeerClosed):
				return "closed by the extra"
			case errors.As(err, &ne) && ne.Timeout():
				s.log.Warn("no packet from the Klipper extra, closing", "idle", s.opts.IdleTimeout)
				return "idle timeout"
			default:
				select {
				case <-c.done:
					return "closed by the daemon"
				default:
				}
				return err.Error()
			}
		}
		if badReason == "" && env.V != ProtocolVersion {
			s.refuseVersion(c, env)
			return "unsupported protocol version"
		}
		if badReason == "" {
			badReason = s.dispatch(c, env, data)
		}
		if badReason == "" {
			bad = 0
			continue
		}
		bad++
		s.log.Debug("bad packet from the extra", "reason", badReason)
		if bad > maxBadPackets {
			s.log.Warn("too many bad packets from the extra, closing", "last", badReason)
			return "flood of bad packets"
		}
		c.sendError(env.ID, CodeBadPacket, badReason)
	}
}

// dispatch acts on one well-formed packet. It returns a non-empty reason
// when the packet's body is malformed.
func (s *Server) dispatch(c *conn, env Envelope, data []byte) string {
	switch env.Type {
	case TypeStatus:
		var sp StatusPacket
		if err := json.Unmarshal(data, &sp); err != nil {
			return "bad status: " + err.Error()
		}
		s.mu.Lock()
		if s.active == c {
			s.state.HaveStatus = true
			s.state.Status = sp.Status
			s.state.StatusAt = time.Now()
			s.notifyLocked()
		}
		s.mu.Unlock()
		st := sp.Status
		s.emit(Event{Kind: EventStatus, Status: &st})
	case TypeResult:
		var rp ResultPacket
		if err := json.Unmarshal(data, &rp); err != nil {
			return "bad result: " + err.Error()
		}
		p := c.answerPending(rp.ID, answer{ok: rp.OK, message: rp.Error})
		res := Result{ID: rp.ID, OK: rp.OK, Error: rp.Error}
		if p != nil {
			res.Op, res.JobID, res.Name = p.op, p.jobID, p.name
			if p.op == TypeFile {
				// Nobody waits on a served fetch; its entry only names the
				// file in this event.
				c.unregister(rp.ID)
			}
		} else {
			s.log.Info("result for no pending request", "id", rp.ID, "ok", rp.OK)
		}
		if !rp.OK {
			s.log.Warn("Klipper extra refused a request", "id", rp.ID, "op", res.Op, "job", res.JobID, "error", rp.Error)
		}
		s.emit(Event{Kind: EventResult, Result: &res})
	case TypeError:
		var ep ErrorPacket
		if err := json.Unmarshal(data, &ep); err != nil {
			return "bad error packet: " + err.Error()
		}
		s.log.Warn("error from the Klipper extra", "id", ep.ID, "code", ep.Code, "message", ep.Message)
		if ep.ID != "" {
			c.answerPending(ep.ID, answer{code: ep.Code, message: ep.Message})
		}
	case TypePong:
		c.answerPending(env.ID, answer{ok: true})
	case TypeFetch:
		var fp FetchPacket
		if err := json.Unmarshal(data, &fp); err != nil {
			return "bad fetch: " + err.Error()
		}
		s.serveFetch(c, fp)
	case TypeCommand:
		var cp CommandPacket
		if err := json.Unmarshal(data, &cp); err != nil {
			return "bad command: " + err.Error()
		}
		if cp.Name == "" {
			return "command without name"
		}
		s.log.Info("command from Klipper", "name", cp.Name)
		select {
		case s.commands <- cp.Command:
		default:
			s.log.Warn("command dropped: nobody is reading commands", "name", cp.Name)
		}
	case TypeHello:
		return "hello already received on this connection"
	default:
		c.sendError(env.ID, CodeUnknownType, fmt.Sprintf("unknown packet type %q", env.Type))
	}
	return ""
}

func (s *Server) serveFetch(c *conn, fp FetchPacket) {
	if err := ValidateName(fp.Name); err != nil {
		c.sendError(fp.ID, CodeUnknownFile, err.Error())
		s.emit(Event{Kind: EventFetch, Name: fp.Name, Served: false, Reason: err.Error()})
		return
	}
	h := s.takeHeld(fp.Name)
	if h == nil {
		// The error packet carries this text to the extra: its wording stays.
		msg := fmt.Sprintf("no file named %s is staged (unknown or expired)", fp.Name)
		s.log.Info("fetch of a name that is not held", "name", fp.Name)
		c.sendError(fp.ID, CodeUnknownFile, msg)
		s.emit(Event{Kind: EventFetch, Name: fp.Name, Served: false, Reason: msg})
		return
	}
	defer func() {
		if err := h.file.Close(); err != nil {
			s.log.Warn("closing served held file", "name", fp.Name, "err", err)
		}
	}()
	pkt := h.packet
	pkt.Envelope = NewEnvelope(TypeFile, fp.ID)
	c.register(fp.ID, TypeFile, "", fp.Name)
	if err := c.send(pkt, h.file.Fd()); err != nil {
		c.unregister(fp.ID)
		s.log.Warn("sending fetched file failed", "name", fp.Name, "err", err)
		s.emit(Event{Kind: EventFetch, Name: fp.Name, Served: false, Reason: err.Error()})
		return
	}
	s.log.Info("held file served to Klipper", "name", fp.Name, "size", pkt.Size)
	s.emit(Event{Kind: EventFetch, Name: fp.Name, Served: true})
}

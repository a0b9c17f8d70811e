package memfd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// MaxFDsPerPacket bounds how many descriptors ReceivePacket accepts in one
// packet. The bridge protocol sends at most one; room for a few more lets
// the receiver see (and close) a misbehaving peer's extras instead of the
// kernel truncating them silently.
const MaxFDsPerPacket = 4

var (
	// ErrPacketTruncated means the packet was larger than the buffer.
	ErrPacketTruncated = errors.New("packet larger than the receive buffer")
	// ErrControlTruncated means the ancillary data did not fit (MSG_CTRUNC):
	// fds were lost, so the packet cannot be trusted.
	ErrControlTruncated = errors.New("ancillary data truncated (too many fds)")
	// ErrUnexpectedFDs means a packet carried descriptors where none or fewer
	// were expected. The descriptors have been closed.
	ErrUnexpectedFDs = errors.New("packet carried unexpected file descriptors")
)

// SendPacket writes payload as one packet on a SOCK_SEQPACKET connection,
// with fds attached as SCM_RIGHTS when given. The kernel duplicates the fds
// into the receiver; the caller still owns (and must close) its copies.
func SendPacket(c *net.UnixConn, payload []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(payload, oob, nil)
	if err != nil {
		return fmt.Errorf("send packet: %w", err)
	}
	if n != len(payload) || oobn != len(oob) {
		return fmt.Errorf("send packet: short write (%d/%d bytes, %d/%d control)", n, len(payload), oobn, len(oob))
	}
	return nil
}

// SendJSON marshals v and sends it as one packet with optional fds.
func SendJSON(c *net.UnixConn, v any, fds ...int) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("send packet: encode: %w", err)
	}
	return SendPacket(c, payload, fds...)
}

// ReceivePacket reads one packet into buf and returns its length and the
// fds that came with it (close-on-exec; the caller owns them). A packet
// larger than buf, truncated ancillary data, or more than maxFDs fds are
// errors; in every error case all received fds have been closed already.
// Honors the connection's read deadline.
func ReceivePacket(c *net.UnixConn, buf []byte, maxFDs int) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(4*MaxFDsPerPacket))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	var fds []int
	if oobn > 0 {
		var perr error
		fds, perr = parseRights(oob[:oobn])
		if perr != nil && err == nil {
			err = perr
		}
	}
	switch {
	case err != nil:
	case flags&unix.MSG_CTRUNC != 0:
		err = ErrControlTruncated
	case flags&unix.MSG_TRUNC != 0:
		err = fmt.Errorf("%w (%d bytes)", ErrPacketTruncated, len(buf))
	case len(fds) > maxFDs:
		err = fmt.Errorf("%w: %d fds, at most %d allowed", ErrUnexpectedFDs, len(fds), maxFDs)
	}
	if err != nil {
		CloseFDs(fds)
		return 0, nil, err
	}
	return n, fds, nil
}

// CloseFDs closes every descriptor in fds, ignoring errors: it is used to
// discard descriptors nobody will ever use.
func CloseFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			CloseFDs(fds)
			return nil, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// PeerCred returns the uid, gid and pid of the process at the other end of
// c, as the kernel recorded them when the connection was made (SO_PEERCRED).
func PeerCred(c *net.UnixConn) (unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return unix.Ucred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return unix.Ucred{}, fmt.Errorf("peer credentials: %w", credErr)
	}
	return *cred, nil
}

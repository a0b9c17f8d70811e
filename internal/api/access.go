package api

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of one connection, fixed at accept time.
type peer struct {
	unix bool
	// Unix socket: credentials from SO_PEERCRED and SO_PEERGROUPS.
	uid, gid uint32
	pid      int32
	groups   []uint32
	credErr  error
	// TCP: the remote address.
	addr netip.AddrPort
}

type peerKey struct{}

// connContext records the peer of each accepted connection. Credentials are
// read from the kernel at accept time: they describe the process that
// connected, whatever it does later.
func connContext(ctx context.Context, c net.Conn) context.Context {
	p := &peer{}
	switch cc := c.(type) {
	case *net.UnixConn:
		p.unix = true
		p.uid, p.gid, p.pid, p.groups, p.credErr = unixCreds(cc)
	default:
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			p.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func peerOf(r *http.Request) *peer {
	p, _ := r.Context().Value(peerKey{}).(*peer)
	return p
}

// soPeerGroups is SO_PEERGROUPS (Linux ≥ 4.13), the same number on every
// architecture lmntd ships for.
const soPeerGroups = 0x3b

func unixCreds(c *net.UnixConn) (uid, gid uint32, pid int32, groups []uint32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	var credErr error
	ctlErr := raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		uid, gid, pid = cred.Uid, cred.Gid, cred.Pid
		groups, credErr = peerGroups(int(fd))
	})
	if ctlErr != nil {
		return 0, 0, 0, nil, ctlErr
	}
	return uid, gid, pid, groups, credErr
}

// peerGroups reads the peer's supplementary groups with SO_PEERGROUPS.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]byte, 64*4)
	for {
		n := uint32(len(buf))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, soPeerGroups,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno == unix.ERANGE && int(n) > len(buf) {
			buf = make([]byte, n)
			continue
		}
		if errno != 0 {
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
		out := make([]uint32, n/4)
		for i := range out {
			out[i] = binary.NativeEndian.Uint32(buf[i*4:])
		}
		return out, nil
	}
}

// Access decides who may use the API.
type Access struct {
	// Group is the group whose members may use the unix socket (besides
	// root and the daemon's own user). Default "lmnt".
	Group string
	// TrustedClients returns the networks admitted on TCP without a key
	// (read on every request: trusted_clients reloads live).
	TrustedClients func() []netip.Prefix
	// APIKey returns the key TCP clients may present in X-Api-Key; nil or
	// empty admits nobody by key.
	APIKey func() []byte

	groupID  uint32
	hasGroup bool
	selfUID  uint32
}

func (a *Access) init() {
	if a.Group == "" {
		a.Group = "lmnt"
	}
	if g, err := user.LookupGroup(a.Group); err == nil {
		if id, err := strconv.ParseUint(g.Gid, 10, 32); err == nil {
			a.groupID, a.hasGroup = uint32(id), true
		}
	}
	a.selfUID = uint32(os.Getuid())
}

// errDenied is an access refusal; its message tells what to do.
var errDenied = errors.New("access denied")

// check admits or refuses r. The answer names the reason, never a secret.
func (a *Access) check(r *http.Request) error {
	p := peerOf(r)
	if p == nil {
		return fmt.Errorf("%w: unknown connection", errDenied)
	}
	if p.unix {
		return a.checkUnix(p)
	}
	return a.checkTCP(r, p)
}

func (a *Access) checkUnix(p *peer) error {
	if p.credErr != nil {
		return fmt.Errorf("%w: cannot read the caller's credentials: %v", errDenied, p.credErr)
	}
	if p.uid == 0 || p.uid == a.selfUID {
		return nil
	}
	if a.hasGroup {
		if p.gid == a.groupID {
			return nil
		}
		for _, g := range p.groups {
			if g == a.groupID {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: uid %d is not in group %s: add yourself to group %s (sudo usermod -aG %s $USER, then log in again)",
		errDenied, p.uid, a.Group, a.Group, a.Group)
}

func (a *Access) checkTCP(r *http.Request, p *peer) error {
	if key := r.Header.Get("X-Api-Key"); key != "" {
		var want []byte
		if a.APIKey != nil {
			want = a.APIKey()
		}
		if len(want) > 0 && subtle.ConstantTimeCompare([]byte(key), want) == 1 {
			return nil
		}
		return fmt.Errorf("%w: invalid API key", errDenied)
	}
	client := clientAddr(r, p)
	if client.IsValid() && a.TrustedClients != nil {
		for _, pfx := range a.TrustedClients() {
			if pfx.Contains(client) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: client %s is not in api.trusted_clients and sent no valid X-Api-Key", errDenied, client)
}

// clientAddr is the address access is decided on: the TCP peer, or the
// last X-Forwarded-For hop when (and only when) the peer is a loopback
// proxy such as the local nginx. A header from anyone else is ignored: it
// would let any client claim to be trusted.
func clientAddr(r *http.Request, p *peer) netip.Addr {
	addr := p.addr.Addr()
	if !addr.IsLoopback() {
		return addr
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return addr
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	last := strings.TrimSpace(hops[len(hops)-1])
	if a, err := netip.ParseAddr(last); err == nil {
		return a.Unmap()
	}
	return netip.Addr{} // unparsable: trust nothing
}

// sameOrigin refuses browser requests from other sites (CSRF): a page on
// the internet must not make a trusted LAN browser pair the printer or
// start a print. Non-browser clients send neither header.
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return fmt.Errorf("%w: cross-site request", errDenied)
	}
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" && r.Method == http.MethodGet {
		return nil
	}
	host := origin
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if !strings.EqualFold(host, r.Host) {
		return fmt.Errorf("%w: request from origin %q", errDenied, origin)
	}
	return nil
}

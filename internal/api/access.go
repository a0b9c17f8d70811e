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
	"net/url"
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
	// proxy: the connection came through the web server's proxy socket,
	// the only channel whose forwarded headers count.
	proxy bool
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
	return withPeer(ctx, c, false)
}

// proxyConnContext is connContext for the proxy socket.
func proxyConnContext(ctx context.Context, c net.Conn) context.Context {
	return withPeer(ctx, c, true)
}

func withPeer(ctx context.Context, c net.Conn, proxy bool) context.Context {
	p := &peer{proxy: proxy}
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
	// ProxyGroup is the web server's group: only root and its members may
	// use the proxy socket. Default "www-data".
	ProxyGroup string
	// TrustedClients returns the LAN networks admitted on TCP and through
	// the proxy without a key (read on every request: trusted_clients
	// reloads live). Loopback and this machine's own addresses are never
	// admitted by network, whatever it returns.
	TrustedClients func() []netip.Prefix
	// APIKey returns the key TCP clients may present in X-Api-Key; nil or
	// empty admits nobody by key.
	APIKey func() []byte
	// AllowedHosts returns extra host names browsers may use (api.allowed_hosts).
	AllowedHosts func() []string

	groupID, proxyGroupID   uint32
	hasGroup, hasProxyGroup bool
	selfUID                 uint32
	// machine reports this machine's names and addresses; tests replace it.
	machine func() machineInfo
}

func (a *Access) init() {
	if a.Group == "" {
		a.Group = "lmnt"
	}
	if a.ProxyGroup == "" {
		a.ProxyGroup = "www-data"
	}
	a.groupID, a.hasGroup = lookupGID(a.Group)
	a.proxyGroupID, a.hasProxyGroup = lookupGID(a.ProxyGroup)
	a.selfUID = uint32(os.Getuid())
	if a.machine == nil {
		a.machine = newMachineCache(machineRefresh).get
	}
}

func lookupGID(name string) (uint32, bool) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err == nil
}

// errDenied is an access refusal; its message tells what to do.
var errDenied = errors.New("access denied")

// check admits or refuses r. The answer names the reason, never a secret.
func (a *Access) check(r *http.Request) error {
	p := peerOf(r)
	switch {
	case p == nil:
		return fmt.Errorf("%w: unknown connection", errDenied)
	case p.proxy:
		if err := a.checkProxyPeer(p); err != nil {
			return err
		}
		client, err := forwardedFor(r)
		if err != nil {
			return err
		}
		return a.checkNetwork(r, client)
	case p.unix:
		return a.checkUnix(p)
	}
	return a.checkNetwork(r, p.addr.Addr())
}

func (a *Access) checkUnix(p *peer) error {
	if p.credErr != nil {
		return fmt.Errorf("%w: cannot read the caller's credentials: %v", errDenied, p.credErr)
	}
	if p.uid == 0 || p.uid == a.selfUID || a.hasGroup && p.inGroup(a.groupID) {
		return nil
	}
	return fmt.Errorf("%w: uid %d is not in group %s: add yourself to group %s (sudo usermod -aG %s $USER, then log in again)",
		errDenied, p.uid, a.Group, a.Group, a.Group)
}

func (p *peer) inGroup(gid uint32) bool {
	if p.gid == gid {
		return true
	}
	for _, g := range p.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// checkProxyPeer admits only the web server on the proxy socket. The
// socket's mode already keeps others out; this holds even when it was
// created with the wrong owner.
func (a *Access) checkProxyPeer(p *peer) error {
	if p.credErr != nil {
		return fmt.Errorf("%w: cannot read the caller's credentials: %v", errDenied, p.credErr)
	}
	if p.uid == 0 || a.hasProxyGroup && p.inGroup(a.proxyGroupID) {
		return nil
	}
	return fmt.Errorf("%w: uid %d is not the web server (group %s): the proxy socket is for nginx only; use /run/lmntd/api.sock",
		errDenied, p.uid, a.ProxyGroup)
}

// forwardedFor is the browser's address as the proxy saw it: the last
// X-Forwarded-For hop, the one the proxy itself added. Only called for the
// proxy socket, where nobody but the web server can set the header.
func forwardedFor(r *http.Request) (netip.Addr, error) {
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return netip.Addr{}, fmt.Errorf("%w: the proxy sent no X-Forwarded-For (use the shipped nginx snippet)", errDenied)
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	last := strings.TrimSpace(hops[len(hops)-1])
	a, err := netip.ParseAddr(last)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: the proxy's X-Forwarded-For %q is not an address", errDenied, last)
	}
	return a.Unmap().WithZone(""), nil
}

// checkNetwork admits a client by API key, or by address: in
// trusted_clients, and neither loopback nor one of this machine's own
// addresses (any local user can connect from those).
func (a *Access) checkNetwork(r *http.Request, client netip.Addr) error {
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
	if !client.IsValid() {
		return fmt.Errorf("%w: unknown client address", errDenied)
	}
	if m := a.machine(); m.addrErr != nil {
		return fmt.Errorf("%w: cannot list this machine's addresses (%v), so no client is trusted by address; use the API key", errDenied, m.addrErr)
	}
	if client.IsLoopback() || a.machine().hasAddr(client) {
		return fmt.Errorf("%w: client %s is this machine: local users use /run/lmntd/api.sock (group %s) or the API key", errDenied, client, a.Group)
	}
	if a.TrustedClients != nil {
		for _, pfx := range a.TrustedClients() {
			if pfx.Contains(client) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: client %s is not in api.trusted_clients and sent no valid X-Api-Key", errDenied, client)
}

// requestOrigin is the origin (scheme, host, port) a browser used for r.
// The scheme is https only when the proxy says so: lmntd itself serves
// plain http.
func requestOrigin(r *http.Request) (origin, error) {
	scheme := "http"
	if p := peerOf(r); p != nil && p.proxy && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https") {
		scheme = "https"
	}
	if r.Host == "" {
		return origin{}, fmt.Errorf("%w: the request names no Host", errDenied)
	}
	return parseOrigin(scheme, r.Host)
}

// checkHost refuses requests whose Host is not this machine (DNS
// rebinding: a page on evil.example whose name now resolves to the
// printer's address would otherwise be the API's own origin).
func (a *Access) checkHost(o origin) error {
	if o.host == "localhost" || strings.HasSuffix(o.host, ".localhost") {
		return nil
	}
	if addr, err := netip.ParseAddr(o.host); err == nil {
		addr = addr.Unmap()
		if addr.IsLoopback() || a.machine().hasAddr(addr) {
			return nil
		}
	}
	if a.machine().hasName(o.host) {
		return nil
	}
	if a.AllowedHosts != nil {
		for _, h := range a.AllowedHosts() {
			if strings.EqualFold(strings.TrimSuffix(h, "."), o.host) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: host %q is not this printer: add it to api.allowed_hosts if it is", errDenied, o.host)
}

// sameOrigin refuses browser requests from other sites (CSRF): a page on
// the internet must not make a trusted LAN browser pair the printer or
// start a print. The Origin must be exactly the request's own (scheme,
// host and port). Non-browser clients send neither header.
func sameOrigin(r *http.Request, own origin) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return fmt.Errorf("%w: cross-site request", errDenied)
	}
	raw := r.Header.Get("Origin")
	if raw == "" || raw == "null" && r.Method == http.MethodGet {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return fmt.Errorf("%w: request from origin %q", errDenied, raw)
	}
	o, err := parseOrigin(strings.ToLower(u.Scheme), u.Host)
	if err != nil || o != own {
		return fmt.Errorf("%w: request from origin %q", errDenied, raw)
	}
	return nil
}

// origin is a web origin with the default port filled in and the host
// lower-cased, without brackets.
type origin struct {
	scheme, host string
	port         uint16
}

func parseOrigin(scheme, hostport string) (origin, error) {
	o := origin{scheme: scheme}
	switch scheme {
	case "http":
		o.port = 80
	case "https":
		o.port = 443
	default:
		return origin{}, fmt.Errorf("%w: scheme %q", errDenied, scheme)
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return origin{}, fmt.Errorf("%w: bad port in %q", errDenied, hostport)
		}
		host, o.port = h, uint16(n)
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" || strings.ContainsAny(host, "/@ []") {
		return origin{}, fmt.Errorf("%w: bad host in %q", errDenied, hostport)
	}
	o.host = strings.TrimSuffix(strings.ToLower(host), ".")
	if a, err := netip.ParseAddr(o.host); err == nil {
		o.host = a.Unmap().String()
	}
	return o, nil
}

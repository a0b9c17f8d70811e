package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
)

// Socket-activation fd names (FileDescriptorName= in the socket units).
const (
	fdNameAPI     = "api"
	fdNameKlipper = "klipper"
	fdNameHTTP    = "http"
	fdNameProxy   = "proxy"
)

// listeners are the daemon's sockets, passed by systemd or made here.
type listeners struct {
	api       net.Listener
	klipper   *net.UnixListener
	http      net.Listener // nil when off
	proxy     net.Listener // the web server's proxy socket; nil when off
	activated bool
}

func (l *listeners) close() {
	for _, c := range []interface{ Close() error }{l.api, l.klipper, l.http, l.proxy} {
		if c != nil && !isNilListener(c) {
			_ = c.Close()
		}
	}
}

func isNilListener(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case net.Listener:
		return v == nil
	case *net.UnixListener:
		return v == nil
	}
	return false
}

// listenConfig says where the daemon's sockets go when systemd passes none.
type listenConfig struct {
	apiSocket, bridgeSocket, httpAddr string
	// group may use the API and bridge sockets.
	group string
	// proxySocket ("" ⇒ off) is for the web server's group proxyGroup only.
	proxySocket, proxyGroup string
}

// openListeners takes the sockets systemd passed (by fd name) and creates
// the rest on the configured paths.
func openListeners(lc listenConfig, log *slog.Logger) (*listeners, error) {
	l := &listeners{}
	ok := false
	defer func() {
		if !ok {
			l.close()
		}
	}()
	for name, files := range activation.FilesWithNames() {
		for _, f := range files {
			err := l.adopt(name, f, log)
			f.Close() // FileListener made its own descriptor
			if err != nil {
				return nil, err
			}
		}
	}
	gid, haveGroup := lookupGroup(lc.group)
	if l.api == nil {
		ln, err := listenUnixStream("api.socket", lc.apiSocket, gid, haveGroup, log)
		if err != nil {
			return nil, err
		}
		l.api = ln
	}
	if l.klipper == nil {
		if err := makeParent(lc.bridgeSocket, gid, haveGroup); err != nil {
			return nil, err
		}
		ln, err := klipper.Listen(lc.bridgeSocket, 0o660)
		if err != nil {
			return nil, err
		}
		chgrp(lc.bridgeSocket, gid, haveGroup, log)
		l.klipper = ln
	}
	if l.http == nil && lc.httpAddr != "" {
		ln, err := net.Listen("tcp", lc.httpAddr)
		if err != nil {
			return nil, fmt.Errorf("api.listen %s: %w", lc.httpAddr, err)
		}
		l.http = ln
	}
	if l.proxy == nil && lc.proxySocket != "" {
		// The proxy socket has its own directory, which the web server
		// (not in group lmnt) can traverse; the socket's group and mode
		// keep everyone else out.
		pgid, havePGroup := lookupGroup(lc.proxyGroup)
		if !havePGroup {
			log.Warn("the web server's group does not exist: only root can use the proxy socket", "api.proxy_group", lc.proxyGroup)
		}
		if err := makeParentMode(lc.proxySocket, 0o755, 0, false); err != nil {
			return nil, err
		}
		ln, err := listenUnixStream("api.proxy_socket", lc.proxySocket, pgid, havePGroup, log)
		if err != nil {
			return nil, err
		}
		l.proxy = ln
	}
	ok = true
	return l, nil
}

// adopt turns one passed descriptor into the listener its name says.
func (l *listeners) adopt(name string, f *os.File, log *slog.Logger) error {
	ln, err := net.FileListener(f)
	if err != nil {
		return fmt.Errorf("socket activation: fd %q is not a listening socket: %w", name, err)
	}
	switch name {
	case fdNameAPI:
		if ln.Addr().Network() != "unix" {
			ln.Close()
			return fmt.Errorf("socket activation: fd %q is %s, want a unix stream socket", name, ln.Addr().Network())
		}
		l.api = ln
	case fdNameKlipper:
		ul, isUnix := ln.(*net.UnixListener)
		if !isUnix || ln.Addr().Network() != "unixpacket" {
			ln.Close()
			return fmt.Errorf("socket activation: fd %q is %s, want a unix SEQPACKET socket", name, ln.Addr().Network())
		}
		l.klipper = ul
	case fdNameHTTP:
		if ln.Addr().Network() != "tcp" {
			ln.Close()
			return fmt.Errorf("socket activation: fd %q is %s, want TCP", name, ln.Addr().Network())
		}
		l.http = ln
	case fdNameProxy:
		if ln.Addr().Network() != "unix" {
			ln.Close()
			return fmt.Errorf("socket activation: fd %q is %s, want a unix stream socket", name, ln.Addr().Network())
		}
		l.proxy = ln
	default:
		ln.Close()
		log.Warn("socket activation: ignoring an fd with an unknown name", "name", name)
		return nil
	}
	l.activated = true
	log.Info("socket activation", "name", name, "addr", ln.Addr().String())
	return nil
}

func lookupGroup(name string) (int, bool) {
	if name == "" {
		return 0, false
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.Atoi(g.Gid)
	return id, err == nil
}

// makeParent creates a socket's directory (0750, group lmnt when it
// exists) if it is missing.
func makeParent(path string, gid int, haveGroup bool) error {
	return makeParentMode(path, 0o750, gid, haveGroup)
}

func makeParentMode(path string, mode os.FileMode, gid int, haveGroup bool) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if haveGroup {
		_ = os.Chown(dir, -1, gid)
	}
	return nil
}

func chgrp(path string, gid int, haveGroup bool, log *slog.Logger) {
	if !haveGroup {
		return
	}
	if err := os.Chown(path, -1, gid); err != nil {
		log.Warn("cannot give the socket to its group; only root and lmntd's user can use it", "path", path, "err", err)
	}
}

// listenUnixStream listens on path (replacing a stale socket, never another
// kind of file) with mode 0660.
func listenUnixStream(key, path string, gid int, haveGroup bool, log *slog.Logger) (net.Listener, error) {
	if err := makeParent(path, gid, haveGroup); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s %s exists and is not a socket", key, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	chgrp(path, gid, haveGroup, log)
	return ln, nil
}

// Package marketsim is a fake LMNT Marketplace for tests, the demo and
// manual testing. It speaks the contract of ../shared/spec/marketplace-api.md
// in both profiles (current and legacy) over HTTPS with its own test CA:
// users, printers, pairing by code, legacy registration, printer JWTs,
// refresh, per-printer queues, jobs encrypted for the printer's key exactly
// as the marketplace does, downloads (through its proxy, or from a fake
// third-party storage host that records any Authorization header), the
// job-status history, and the Firebase-style push stream. Every call can be
// given faults (status codes, latency, truncated bodies, silent or dropped
// connections), and an admin API drives it like a web-shop user would.
//
// It shares no crypto or encoding code with the printer side on purpose: a
// mistake on either side must fail a round-trip test.
package marketsim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// PlainHTTP serves http:// instead of https:// (demo on loopback).
	PlainHTTP bool
	// Listen addresses; "" ⇒ 127.0.0.1 on a free port.
	APIAddr, StorageAddr, PushAddr, AdminAddr string
	// Hostnames are extra DNS names for the server certificate.
	Hostnames []string

	TokenLifetime time.Duration // printer JWT lifetime; 0 ⇒ 30 days
	// AutoApprove approves every pairing session as it starts, owned by
	// the first user (demo).
	AutoApprove bool
	// SealPairing answers pair/complete in the sealed form (a NaCl box to
	// the printer key) instead of plain JSON.
	SealPairing bool
	// KeepAlive is the push stream's keep-alive interval; 0 ⇒ 30 s.
	KeepAlive time.Duration
	// Varying makes every answer vary the shape of each optional field the
	// way the real server's builds do (timestamps as ISO with or without
	// zone, epoch seconds or milliseconds, Firestore objects, null; ids as
	// numbers; extra fields), and adds poll entries a client must skip
	// (no print_job_id, not an object, a DEK of the wrong type) next to the
	// real jobs. See varying.go.
	Varying bool
	// AltDEKField names the DEK package gcode_dek_package (the seed
	// README's name) instead of gcode_dek_encrypted_hex, the name the real
	// poll uses in both eras.
	AltDEKField bool
	// LegacyOnly serves only the legacy profile's paths, as a seed-era
	// marketplace did: the current profile's endpoints answer 404.
	LegacyOnly bool
	// LMNTHostAddr is the listen address of the second LMNT host, whose
	// download URLs need the printer token ("" ⇒ 127.0.0.1, free port).
	LMNTHostAddr string

	Now    func() time.Time // nil ⇒ time.Now
	Rand   io.Reader        // job and pairing randomness; nil ⇒ crypto/rand
	Logger *slog.Logger     // nil ⇒ discard
}

// Server is a running simulator.
type Server struct {
	o       Options
	log     *slog.Logger
	ca      *testCA
	secret  []byte // JWT signing key
	closing chan struct{}

	api, storage, push, admin, lmnt2 *listener

	mu          sync.Mutex
	users       map[string]*user // by email
	userOrder   []string
	printers    map[string]*printer
	sessions    map[string]*session // by session id
	jobs        map[string]*job
	tokens      map[string]*tokenState // by jti
	faults      map[Call]*Fault
	calls       map[Call]int
	inflight    map[Call]int
	maxInflight map[Call]int
	storageAuth []string // Authorization headers seen by the storage host
	pushAuth    []string // … and by the push host
	tokenSeen   []TokenPresentation
	nextID      int
	polls       int        // poll answers given (Varying picks shapes by it)
	shapes      int        // expiries rendered (Varying)
	fleet       fleetState // request log and timed faults (fleet.go)
}

type listener struct {
	srv *http.Server
	url string
}

type user struct {
	id, email, password string
}

type printer struct {
	id, userID                string
	name, manufacturer, model string
	extruders                 int
	publicKey                 [32]byte
	profile                   string // how it was registered: "current" (pairing) or "legacy"
	queue                     []string
	watchers                  map[chan struct{}]struct{}
	pushConnections           int
	pushKeepAlives            int // written and flushed on its push streams
}

type session struct {
	id, code  string
	publicKey [32]byte
	keyID     string
	name      string
	mfr       string
	model     string
	extruders int
	status    string // pending, approved, expired
	expires   time.Time
	printerID string
}

type job struct {
	id, purchaseID, printerID string
	status                    string
	created                   time.Time
	download                  DownloadKind
	enc                       encryptedJob
	storageSig                string
	history                   []StatusPost
}

type tokenState struct {
	printerID string
	expired   bool // ExpireTokens: refused as expired by everything but refresh
	revoked   bool // RevokeTokens: refused by refresh too
}

// New starts a simulator on its listeners. Close it when done.
func New(o Options) (*Server, error) {
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = 30 * 24 * time.Hour
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	s := &Server{
		o: o, log: o.Logger, closing: make(chan struct{}),
		users: map[string]*user{}, printers: map[string]*printer{}, sessions: map[string]*session{},
		jobs: map[string]*job{}, tokens: map[string]*tokenState{}, faults: map[Call]*Fault{}, calls: map[Call]int{},
		inflight: map[Call]int{}, maxInflight: map[Call]int{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.secret = make([]byte, 32)
	if _, err := rand.Read(s.secret); err != nil {
		return nil, err
	}
	var err error
	if !o.PlainHTTP {
		if s.ca, err = newTestCA(o.Hostnames); err != nil {
			return nil, err
		}
	}
	for _, l := range []struct {
		dst     **listener
		addr    string
		handler http.Handler
		tls     bool
	}{
		{&s.api, o.APIAddr, s.apiHandler(), !o.PlainHTTP},
		{&s.storage, o.StorageAddr, s.storageHandler(), !o.PlainHTTP},
		{&s.push, o.PushAddr, s.pushHandler(), !o.PlainHTTP},
		{&s.admin, o.AdminAddr, s.adminHandler(), false}, // loopback, for curl
		{&s.lmnt2, o.LMNTHostAddr, s.lmntHostHandler(), !o.PlainHTTP},
	} {
		if *l.dst, err = s.listen(l.addr, s.recordTokens(l.dst, l.handler), l.tls); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) listen(addr string, h http.Handler, useTLS bool) (*listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("marketsim: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	scheme := "http"
	if useTLS {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{s.ca.server}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	go srv.Serve(ln)
	return &listener{srv: srv, url: scheme + "://" + ln.Addr().String()}, nil
}

// Close stops every listener and ends open streams.
func (s *Server) Close() {
	select {
	case <-s.closing:
		return
	default:
		close(s.closing)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, l := range []*listener{s.api, s.storage, s.push, s.admin, s.lmnt2} {
		if l != nil {
			if err := l.srv.Shutdown(ctx); err != nil {
				l.srv.Close()
			}
		}
	}
}

// URL is the marketplace API base (also serves the legacy cws login).
func (s *Server) URL() string { return s.api.url }

// StorageURL is the fake third-party storage host.
func (s *Server) StorageURL() string { return s.storage.url }

// PushURL is the Realtime-Database-style push host.
func (s *Server) PushURL() string { return s.push.url }

// LMNTHostURL is the second LMNT host: its download URLs need the printer
// token, and it is not the API base.
func (s *Server) LMNTHostURL() string { return s.lmnt2.url }

// AdminURL is the plain-http admin API (loopback).
func (s *Server) AdminURL() string { return s.admin.url }

// CACertPEM is the test CA certificate clients must trust (nil in plain
// http mode).
func (s *Server) CACertPEM() []byte {
	if s.ca == nil {
		return nil
	}
	return s.ca.certPEM
}

// CertPool holds the test CA (nil in plain http mode).
func (s *Server) CertPool() *x509.CertPool {
	if s.ca == nil {
		return nil
	}
	return s.ca.pool
}

// newID makes an id with a readable prefix and a random tail.
func (s *Server) newID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	s.nextID++
	return fmt.Sprintf("%s-%d-%s", prefix, s.nextID, hex.EncodeToString(b))
}

// ErrNotFound names an unknown user, printer, job or pairing code.
var ErrNotFound = errors.New("marketsim: not found")

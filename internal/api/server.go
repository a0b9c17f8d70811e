// Package api is lmntd's local HTTP API: the original plugin's endpoints
// under /machine/lmnt_marketplace/ and /machine/encrypted_print/ (same
// names and shapes, minus every secret), the /lmnt/v1/ endpoints the lmnt
// CLI uses, and the embedded pairing page.
//
// It is served on the socket-activated unix socket (callers admitted by
// their kernel credentials: root, the daemon's user and members of group
// lmnt), optionally on TCP (trusted_clients networks by the connecting
// address, or an X-Api-Key) and on the web server's proxy socket (the only
// channel whose X-Forwarded-For counts). Browser requests must name this
// machine as Host and come from the API's own origin. Every answer is JSON
// (errors as {"error":{"code","message"}}) except the pairing page, and no
// answer carries the printer token, a download URL, a DEK package or an IV.
//
// /lmnt/v1 endpoints (all JSON):
//
//	GET  /lmnt/v1/status               daemon status (apitype.Status)
//	GET  /lmnt/v1/jobs                 job engine snapshot
//	POST /lmnt/v1/jobs/cancel          {"id","reason"}
//	POST /lmnt/v1/ready                the bed is clear (LMNT_READY)
//	GET  /lmnt/v1/keys                 public key, key id, sealing state
//	POST /lmnt/v1/keys/import-legacy   {"dir","remove_source","replace"}
//	POST /lmnt/v1/keys/reseal          {"to":"tpm"|"software"}
//	GET  /lmnt/v1/doctor[?offline=1]   health checks (apitype.DoctorReport)
//	POST /lmnt/v1/restart              {"when_idle":true}: exit 75 when idle
//
// GET /metrics answers the instance's metrics in the Prometheus text format
// (the one answer besides the pairing page that is not JSON), under the
// same access control: a scraper on the LAN comes from a trusted_clients
// network or sends the API key in X-Api-Key.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Error is an API error with its HTTP status. Backends return it for
// errors the caller can act on.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Options configure a Server.
type Options struct {
	Backend Backend
	Access  Access
	// MaxUpload bounds an uploaded print file (limits.max_download_size, and
	// the room left in the local queue);
	// a function because the limit reloads live. nil ⇒ 512 MiB.
	MaxUpload func() int64
	// PairingBurst and PairingEvery rate-limit the calls that reach the
	// marketplace with credentials or create sessions (pairing, login,
	// registration): a burst, refilled one call per PairingEvery.
	// Defaults 10 and 6 s.
	PairingBurst int
	PairingEvery time.Duration
	// Metrics writes the instance's metrics in the Prometheus text format
	// for GET /metrics; nil: no such endpoint.
	Metrics func(io.Writer)
	Logger  *slog.Logger
}

// Server serves the API on any number of listeners.
type Server struct {
	o       Options
	log     *slog.Logger
	routes  map[string]map[string]http.HandlerFunc
	limiter *limiter

	mu      sync.Mutex
	servers []*http.Server
}

// New builds a Server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxUpload == nil {
		o.MaxUpload = func() int64 { return 512 << 20 }
	}
	if o.PairingBurst <= 0 {
		o.PairingBurst = 10
	}
	if o.PairingEvery <= 0 {
		o.PairingEvery = 6 * time.Second
	}
	o.Access.init()
	s := &Server{o: o, log: o.Logger, limiter: newLimiter(o.PairingBurst, o.PairingEvery)}
	s.routes = s.buildRoutes()
	return s
}

// Handler is the API as an http.Handler (access control included; the
// connection must have come through Serve for its peer to be known).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve answers on l until ctx ends, then stops accepting, lets requests
// in flight finish (up to 5 s) and returns. On l forwarded headers never
// count: a TCP client is the address it connects from.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return s.serve(ctx, l, connContext)
}

// ServeProxy is Serve for the web server's proxy socket (a unix socket only
// the web server's group can open): there, and only there, X-Forwarded-For
// and X-Forwarded-Proto say who the browser is.
func (s *Server) ServeProxy(ctx context.Context, l net.Listener) error {
	if l.Addr().Network() != "unix" {
		return fmt.Errorf("api: the proxy listener must be a unix socket, not %s", l.Addr().Network())
	}
	return s.serve(ctx, l, proxyConnContext)
}

func (s *Server) serve(ctx context.Context, l net.Listener, connCtx func(context.Context, net.Conn) context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       connCtx,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
		case <-done:
		}
	}()
	err := srv.Serve(l)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err := s.o.Access.check(r); err != nil {
		s.log.Info("api: request refused", "path", r.URL.Path, "reason", err)
		s.refuse(w, r, err)
		return
	}
	// Browsers reach the API over TCP or through the proxy: the Host must
	// be this machine and a page's Origin exactly the API's own.
	if p := peerOf(r); p != nil && (!p.unix || p.proxy) {
		err := func() error {
			own, err := requestOrigin(r)
			if err != nil {
				return err
			}
			if err := s.o.Access.checkHost(own); err != nil {
				return err
			}
			return sameOrigin(r, own)
		}()
		if err != nil {
			s.log.Info("api: request refused", "path", r.URL.Path, "reason", err)
			writeError(w, Errorf(http.StatusForbidden, "forbidden", "%s", err.Error()))
			return
		}
	}
	methods, ok := s.routes[strings.TrimSuffix(r.URL.Path, "/")]
	if !ok {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "no endpoint %s", r.URL.Path))
		return
	}
	h, ok := methods[r.Method]
	if !ok && r.Method == http.MethodHead {
		h, ok = methods[http.MethodGet]
	}
	if !ok {
		allowed := make([]string, 0, len(methods))
		for m := range methods {
			allowed = append(allowed, m)
		}
		sort.Strings(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s (use %s)",
			r.Method, r.URL.Path, strings.Join(allowed, " or ")))
		return
	}
	h(w, r)
}

// writeJSON answers v with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
	}
	var b errorBody
	b.Error.Code, b.Error.Message = ae.Code, ae.Message
	writeJSON(w, ae.Status, b)
}

// decodeJSON reads a small JSON body into v. An empty body leaves v as is.
func decodeJSON(r *http.Request, v any) error {
	const maxBody = 64 << 10
	if r.Body == nil || r.ContentLength == 0 {
		return nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json, not %s", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body over %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) { // an empty body: no fields given
			return nil
		}
		return Errorf(http.StatusBadRequest, "bad_request", "invalid JSON body: %v", err)
	}
	return nil
}

// limiter is a token bucket shared by the pairing and login endpoints.
type limiter struct {
	mu     sync.Mutex
	burst  float64
	tokens float64
	every  time.Duration
	last   time.Time
}

func newLimiter(burst int, every time.Duration) *limiter {
	return &limiter{burst: float64(burst), tokens: float64(burst), every: every, last: time.Now()}
}

// allow takes one token, or says how long until one is free.
func (l *limiter) allow() (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.every))
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	return false, time.Duration((1 - l.tokens) * float64(l.every))
}

// limited wraps h with the pairing rate limit.
func (s *Server) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := s.limiter.allow(); !ok {
			secs := int(wait/time.Second) + 1
			w.Header().Set("Retry-After", fmt.Sprint(secs))
			writeError(w, Errorf(http.StatusTooManyRequests, "rate_limited", "too many pairing or login requests: try again in %d s", secs))
			return
		}
		h(w, r)
	}
}

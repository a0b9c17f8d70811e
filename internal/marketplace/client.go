// Package marketplace is the printer's HTTP client for the LMNT Marketplace,
// in both API profiles of ../shared/spec/marketplace-api.md ("current" and
// "legacy"): pairing and legacy registration, the printer-token policy,
// queue polling, the push stream, ciphertext download and job-status posts.
//
// It never decrypts anything and never holds the printer's private key: a
// sealed pairing answer is opened through the caller's BoxOpener. The printer
// token is sent only to the marketplace origin (exact scheme, host and port)
// and, for downloads, to the configured token hosts over https (download.go);
// every URL that reaches a log has its query string redacted, and TLS
// verification cannot be turned off.
package marketplace

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// Profile selects the era of the marketplace API the client speaks.
type Profile string

const (
	// ProfileCurrent is the printer-agent API (Dec 2025 on): pairing by code.
	ProfileCurrent Profile = "current"
	// ProfileLegacy is the mid-2025 API: registration with a user JWT.
	ProfileLegacy Profile = "legacy"
)

// Defaults from the spec.
const (
	DefaultCurrentBaseURL = "https://api.lmnt.co"
	DefaultLegacyBaseURL  = "https://api.lmnt.market"
	DefaultCWSURL         = "https://cws.lmnt.market"
	// DefaultFirebaseProject is the production RTDB project of the push stream.
	DefaultFirebaseProject = "lmnt-prod"
)

// Options configure a Client. Zero values take the documented defaults.
type Options struct {
	Profile Profile // "" ⇒ current
	BaseURL string  // "" ⇒ the profile's default
	CWSURL  string  // legacy user login host; "" ⇒ DefaultCWSURL
	// PushBaseURL is the Realtime Database origin of the push stream;
	// "" ⇒ https://{FirebaseProject}-default-rtdb.firebaseio.com.
	PushBaseURL     string
	FirebaseProject string // "" ⇒ DefaultFirebaseProject

	// StorageProxyHosts are download hosts never fetched directly: a job URL
	// on one of them (or a subdomain) is replaced by the marketplace's
	// download proxy. nil ⇒ [DefaultStorageProxyHost].
	StorageProxyHosts []string
	// TokenHosts are the hosts ("host" or "host:port") a download may
	// present the printer token to, over https (marketplace.token_hosts).
	// nil ⇒ the BaseURL's host. The token never goes anywhere else.
	TokenHosts []string

	// ExtraCAFile is a PEM bundle added to the system roots (private CA,
	// simulator). Verification itself is always on.
	ExtraCAFile string
	// Development allows plain http:// to non-loopback hosts.
	Development bool

	// StateDir holds the token file (and the pairing-lost marker).
	StateDir string

	RequestTimeout      time.Duration // one API call; 0 ⇒ 30 s
	DownloadTimeout     time.Duration // a whole download; 0 ⇒ 30 min
	DownloadIdleTimeout time.Duration // no body byte for this long ⇒ error; 0 ⇒ 60 s
	// DownloadMinRate (bytes/s) is the slowest average a download may have
	// once DownloadIdleTimeout has passed; 0 ⇒ 16 KiB/s.
	DownloadMinRate  int64
	MaxDownloadBytes int64  // 0 ⇒ 1 GiB
	UserAgent        string // "" ⇒ "lmntd"

	Logger *slog.Logger // nil ⇒ discard
	Clock  clock.Clock  // nil ⇒ the real clock

	// Transport replaces the default transport (tests). Its TLS settings
	// must verify: an InsecureSkipVerify transport is refused.
	Transport http.RoundTripper

	// OnPairingLost is called once when the pairing is declared lost (see
	// AuthPolicy): the printer must be paired again. The key and the old
	// token file are kept for diagnosis.
	OnPairingLost func(error)
	// Auth is the rule for declaring the pairing lost; zero fields take
	// the defaults.
	Auth AuthPolicy
	// MaxRetryAfter caps a server's Retry-After; 0 ⇒ DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// OnRequestError, when set, is told the class of every failed request
	// to the marketplace API and of every download that carries the
	// printer token (one of RequestErrorClasses; a refused token counts
	// once even when the retry after a refresh succeeds). Not the push
	// stream, not requests given up by their caller. It must not block.
	OnRequestError func(class string)
}

// The classes of failed API requests (OnRequestError).
const (
	ErrorNetwork     = "network"      // no answer: refused, reset, DNS, TLS
	ErrorTimeout     = "timeout"      // no answer within the request timeout
	ErrorAuth        = "auth"         // 401 or 403
	ErrorRateLimited = "rate_limited" // 429
	ErrorClient      = "client"       // any other 4xx
	ErrorServer      = "server"       // 5xx
	ErrorBadResponse = "bad_response" // a 2xx whose body does not decode
)

// RequestErrorClasses lists every class OnRequestError may be told.
var RequestErrorClasses = []string{ErrorNetwork, ErrorTimeout, ErrorAuth, ErrorRateLimited, ErrorClient, ErrorServer, ErrorBadResponse}

// Client talks to one marketplace. It is safe for concurrent use.
type Client struct {
	opts      Options
	log       *slog.Logger
	clock     clock.Clock
	base      *url.URL
	cws       *url.URL
	pushBase  *url.URL
	http      *http.Client // API calls: bounded by RequestTimeout
	transport http.RoundTripper
	store     *TokenStore
	paths     apiPaths

	mu   sync.Mutex
	tok  Token
	has  bool
	lost bool

	refreshMu sync.Mutex // one refresh at a time
	storeMu   sync.Mutex // token file writes

	reach       reachability
	auth        authState     // guarded by mu
	authChanged chan struct{} // closed and replaced when AuthHealth may have changed; guarded by mu
}

type apiPaths struct {
	refresh, poll, downloadProxy, jobStatusPrefix string
}

var profilePaths = map[Profile]apiPaths{
	ProfileCurrent: {
		refresh:         "/api/printer-agent/refresh-token",
		poll:            "/api/printer-agent/poll-print-queue",
		downloadProxy:   "/api/printer-agent/download-gcode",
		jobStatusPrefix: "/api/printer-agent/1.0.0/job-status/",
	},
	ProfileLegacy: {
		refresh:         "/api/refresh-printer-token",
		poll:            "/api/poll-print-queue",
		downloadProxy:   "/api/print/download-gcode",
		jobStatusPrefix: "/api/1.0.0/job-status/",
	},
}

// Paths shared by both profiles.
const (
	pathPairStart    = "/api/printers/pair/start"
	pathPairStatus   = "/api/printers/pair/status"
	pathPairComplete = "/api/printers/pair/complete"
	pathRegister     = "/api/register-printer"
	pathJobDetails   = "/api/get-print-job"
	pathUserLogin    = "/auth/login"
)

// New builds a client and loads the stored token, if any.
func New(opts Options) (*Client, error) {
	if opts.Profile == "" {
		opts.Profile = ProfileCurrent
	}
	paths, ok := profilePaths[opts.Profile]
	if !ok {
		return nil, fmt.Errorf("marketplace: unknown api profile %q (want current or legacy)", opts.Profile)
	}
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultCurrentBaseURL
		if opts.Profile == ProfileLegacy {
			opts.BaseURL = DefaultLegacyBaseURL
		}
	}
	if opts.CWSURL == "" {
		opts.CWSURL = DefaultCWSURL
	}
	if opts.FirebaseProject == "" {
		opts.FirebaseProject = DefaultFirebaseProject
	}
	if opts.PushBaseURL == "" {
		opts.PushBaseURL = "https://" + opts.FirebaseProject + "-default-rtdb.firebaseio.com"
	}
	if opts.StorageProxyHosts == nil {
		opts.StorageProxyHosts = DefaultStorageProxyHosts()
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.DownloadTimeout <= 0 {
		opts.DownloadTimeout = 30 * time.Minute
	}
	if opts.DownloadIdleTimeout <= 0 {
		opts.DownloadIdleTimeout = 60 * time.Second
	}
	if opts.MaxDownloadBytes <= 0 {
		opts.MaxDownloadBytes = 1 << 30
	}
	if opts.DownloadMinRate <= 0 {
		opts.DownloadMinRate = 16 << 10
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "lmntd"
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = DefaultMaxRetryAfter
	}
	opts.Auth = opts.Auth.withDefaults()
	if opts.StateDir == "" {
		return nil, errors.New("marketplace: StateDir is required (it holds the printer token)")
	}
	c := &Client{opts: opts, paths: paths, log: opts.Logger, clock: opts.Clock}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = clock.System{}
	}
	var err error
	if c.base, err = c.parseOrigin("base_url", opts.BaseURL); err != nil {
		return nil, err
	}
	if c.cws, err = c.parseOrigin("cws_url", opts.CWSURL); err != nil {
		return nil, err
	}
	if c.pushBase, err = c.parseOrigin("push base url", opts.PushBaseURL); err != nil {
		return nil, err
	}
	if c.transport, err = buildTransport(opts); err != nil {
		return nil, err
	}
	c.http = &http.Client{
		Transport:     c.transport,
		Timeout:       opts.RequestTimeout,
		CheckRedirect: c.checkRedirect,
	}
	c.store = NewTokenStore(opts.StateDir)
	tok, err := c.store.Load()
	switch {
	case err == nil:
		c.tok, c.has = tok, true
	case errors.Is(err, ErrNotPaired):
	default:
		return nil, err
	}
	lost, err := c.store.PairingLost()
	if err != nil {
		return nil, err
	}
	c.lost = lost
	if c.auth, err = loadAuthState(opts.StateDir); err != nil {
		return nil, err
	}
	c.reach.init()
	c.authChanged = make(chan struct{})
	return c, nil
}

// Profile is the API profile the client speaks.
func (c *Client) Profile() Profile { return c.opts.Profile }

// BaseURL is the marketplace origin the printer token is sent to.
func (c *Client) BaseURL() string { return c.base.String() }

// parseOrigin validates a configured base URL: absolute, no query or
// fragment, https unless loopback or Development.
func (c *Client) parseOrigin(what, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("marketplace: %s %q is not an absolute URL", what, redact.URLString(raw))
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("marketplace: %s %q must not carry credentials, a query or a fragment", what, redact.URLString(raw))
	}
	if err := c.checkScheme(u); err != nil {
		return nil, fmt.Errorf("marketplace: %s: %w", what, err)
	}
	return u, nil
}

// ErrInsecureURL is returned for a plain-http URL to a non-loopback host
// without the development switch, or for any scheme but http(s).
var ErrInsecureURL = errors.New("insecure URL refused")

func (c *Client) checkScheme(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if c.opts.Development || isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%w: plain http to %s (only loopback, or the development switch)", ErrInsecureURL, u.Host)
	default:
		return fmt.Errorf("%w: scheme %q", ErrInsecureURL, u.Scheme)
	}
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin reports whether u is exactly the marketplace origin: the only
// place the printer token may go.
func (c *Client) sameOrigin(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, c.base.Scheme) &&
		strings.EqualFold(u.Hostname(), c.base.Hostname()) &&
		effectivePort(u) == effectivePort(c.base)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// checkRedirect keeps redirects short, secure and token-safe: Go forwards
// Authorization to subdomains, we forward it to the exact origin only.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("marketplace: too many redirects")
	}
	if err := c.checkScheme(req.URL); err != nil {
		return err
	}
	if !c.sameOrigin(req.URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

func buildTransport(opts Options) (http.RoundTripper, error) {
	if opts.Transport != nil {
		if t, ok := opts.Transport.(*http.Transport); ok && t.TLSClientConfig != nil && t.TLSClientConfig.InsecureSkipVerify {
			return nil, errors.New("marketplace: a transport with InsecureSkipVerify is refused: TLS verification is always on")
		}
		return opts.Transport, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if opts.ExtraCAFile != "" {
		pem, err := os.ReadFile(opts.ExtraCAFile)
		if err != nil {
			return nil, fmt.Errorf("marketplace: extra CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("marketplace: extra CA file %s holds no PEM certificate", opts.ExtraCAFile)
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyFromEnvironment
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	t.ResponseHeaderTimeout = 60 * time.Second
	t.TLSHandshakeTimeout = 15 * time.Second
	// API calls come one at a time (poll, then a burst of status posts):
	// one kept-alive connection per host serves them, as long as every
	// body is read to the end (see drainAndClose).
	t.MaxIdleConnsPerHost = 2
	return t, nil
}

// HTTPError is a non-2xx answer. Body holds at most 4 KiB of the answer, for
// the operator (it never contains our token).
type HTTPError struct {
	Method, URL string // URL is redacted
	StatusCode  int
	Body        string
	// RetryAfter is the server's Retry-After on a 429 or 503 (already
	// capped), 0 when it sent none.
	RetryAfter time.Duration
}

// ServerWait is the server's Retry-After, if it sent one: HTTPError is a
// backoff.ServerWaiter, which is how loops that do not import this package
// (the job engine's outbox) honour it.
func (e *HTTPError) ServerWait() (time.Duration, bool) { return e.RetryAfter, e.RetryAfter > 0 }

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("marketplace: %s %s: HTTP %d", e.Method, e.URL, e.StatusCode)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// ErrBadResponse wraps an answer that does not fit the contract.
var ErrBadResponse = errors.New("marketplace: unexpected response")

const maxJSONBody = 4 << 20
const maxErrorBody = 4 << 10

// newRequest builds a request to the marketplace (or cws) origin. token ""
// sends no Authorization.
func (c *Client) newRequest(ctx context.Context, method string, u *url.URL, body any, token string) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if token != "" {
		if !c.sameOrigin(u) {
			// Programming error guard: never reachable from the public API.
			return nil, fmt.Errorf("marketplace: refusing to send a token to %s", u.Host)
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

func (c *Client) endpoint(path string, query url.Values) *url.URL {
	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	return &u
}

// do sends req and decodes a 2xx JSON answer into out (out nil ⇒ discard).
// Non-2xx answers become *HTTPError.
func (c *Client) do(req *http.Request, out any) error {
	start := c.clock.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		if req.URL.Host == c.base.Host && req.Context().Err() == nil {
			c.noteUnreachable()
		}
		c.transportFailed(req.Context(), err)
		c.log.Debug("marketplace request failed", "method", req.Method, "url", redact.URL(req.URL), "err", redact.Error(err))
		return fmt.Errorf("marketplace: %s %s: %w", req.Method, redact.URL(req.URL), redact.Error(err))
	}
	defer drainAndClose(resp.Body)
	c.log.Debug("marketplace request", "method", req.Method, "url", redact.URL(req.URL), "status", resp.StatusCode, "took", c.clock.Now().Sub(start))
	if req.URL.Host == c.base.Host {
		c.noteAnswer(resp.StatusCode)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		c.requestFailed(statusErrorClass(resp.StatusCode))
		return c.readHTTPError(req, resp)
	}
	if err := decodeJSON(req, resp, out); err != nil {
		c.requestFailed(ErrorBadResponse)
		return err
	}
	return nil
}

// transportFailed counts a request that got no answer, unless its caller
// gave it up (shutdown, a cancelled job): that says nothing of the
// marketplace.
func (c *Client) transportFailed(ctx context.Context, err error) {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return
	}
	c.requestFailed(transportErrorClass(err))
}

func (c *Client) requestFailed(class string) {
	if c.opts.OnRequestError != nil {
		c.opts.OnRequestError(class)
	}
}

// transportErrorClass tells a timeout from the other failures to get an
// answer.
func transportErrorClass(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return ErrorTimeout
	}
	return ErrorNetwork
}

func statusErrorClass(code int) string {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ErrorAuth
	case code == http.StatusTooManyRequests:
		return ErrorRateLimited
	case code >= 500:
		return ErrorServer
	default:
		return ErrorClient
	}
}

// decodeJSON decodes a 2xx answer into out (nil ⇒ discard).
func decodeJSON(req *http.Request, resp *http.Response, out any) error {
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%w: %s %s: decoding JSON: %v", ErrBadResponse, req.Method, redact.URL(req.URL), err)
	}
	return nil
}

// drainAndClose reads what is left of a small answer before closing it:
// a body closed unread takes its kept-alive connection with it, so the
// next call would pay a new TCP and TLS handshake.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	_ = body.Close()
}

// maxDrain bounds the bytes read only to keep a connection; a longer rest
// costs less as a new connection than as a read.
const maxDrain = 256 << 10

// readHTTPError reads a non-2xx answer, with the server's Retry-After on
// 429 and 503.
func (c *Client) readHTTPError(req *http.Request, resp *http.Response) *HTTPError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	he := &HTTPError{Method: req.Method, URL: redact.URL(req.URL), StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), c.clock.Now()); ok {
			he.RetryAfter = min(d, c.opts.MaxRetryAfter)
		}
	}
	return he
}

// statusCode is the HTTP status carried by err, or 0.
func statusCode(err error) int {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

package marketplace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// Download errors. Every failure of the body surfaces as an error from
// Read, never as a clean io.EOF.
var (
	ErrTooLarge      = errors.New("marketplace: download exceeds the size cap")
	ErrTruncated     = errors.New("marketplace: download truncated")
	ErrIdleTimeout   = errors.New("marketplace: download stalled (idle timeout)")
	ErrUnframedBody  = errors.New("marketplace: download has neither Content-Length nor chunked framing; truncation would be undetectable")
	ErrNoDownloadURL = errors.New("marketplace: job has no download URL")
)

// Download is a streaming download in progress.
type Download struct {
	io.ReadCloser
	// Size is the announced length, -1 when unknown.
	Size int64
	// ViaProxy is true when the job's storage URL was replaced by the
	// marketplace's download proxy.
	ViaProxy bool
}

// DefaultStorageProxyHosts are the storage hosts whose URLs the old plugin
// sent through the marketplace's download proxy: it matched any URL
// containing "storage.googleapis.com", which covers Google Cloud Storage
// and Firebase Storage (firebasestorage.googleapis.com). Their signed URLs
// are not meant for the printer; the proxy serves the same bytes.
func DefaultStorageProxyHosts() []string {
	return []string{"storage.googleapis.com", "firebasestorage.googleapis.com"}
}

// ErrForbiddenTarget is a download URL (or redirect) toward a loopback,
// link-local or private address that is not a configured marketplace host:
// a marketplace-supplied URL must not reach into the printer's own network.
var ErrForbiddenTarget = errors.New("marketplace: download target refused")

// downloadTarget decides where the ciphertext of job jobID is fetched
// from: the marketplace proxy for storage-proxy hosts (and when the job has
// no URL but a gcode_file_url on such a host), its download URL otherwise.
func (c *Client) downloadTarget(ctx context.Context, jobID, raw string) (*url.URL, bool, error) {
	if raw == "" {
		var err error
		if raw, err = c.JobFileURL(ctx, jobID); err != nil {
			return nil, false, fmt.Errorf("%w (and get-print-job failed: %v)", ErrNoDownloadURL, withoutBody(err))
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, false, fmt.Errorf("%w: job %s download URL is not absolute", ErrBadResponse, jobID)
	}
	if c.isStorageProxyHost(u) {
		return c.proxyURL(jobID), true, nil
	}
	if err := c.checkDownloadURL(u); err != nil {
		return nil, false, fmt.Errorf("marketplace: job %s download URL: %w", jobID, err)
	}
	return u, false, nil
}

func (c *Client) proxyURL(jobID string) *url.URL {
	return c.endpoint(c.paths.downloadProxy, url.Values{"print_job_id": {jobID}})
}

func (c *Client) isStorageProxyHost(u *url.URL) bool {
	h := strings.ToLower(u.Hostname())
	hp := strings.ToLower(u.Host)
	return slices.ContainsFunc(c.opts.StorageProxyHosts, func(s string) bool {
		s = strings.ToLower(s)
		return h == s || hp == s || strings.HasSuffix(h, "."+s)
	})
}

// tokenHosts is the allowlist of hosts a download may present the token to.
func (c *Client) tokenHosts() []string {
	if c.opts.TokenHosts != nil {
		return c.opts.TokenHosts
	}
	return []string{c.base.Host}
}

// hostListed reports whether u's host and port match an entry of hosts:
// "host:port" exactly, a bare "host" on the scheme's default https port.
func hostListed(u *url.URL, hosts []string) bool {
	for _, e := range hosts {
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			h, p = strings.Trim(e, "[]"), "443"
		}
		if strings.EqualFold(h, u.Hostname()) && p == effectivePort(u) {
			return true
		}
	}
	return false
}

// mayPresentToken: the printer token goes to the exact marketplace origin,
// and over https to the hosts of marketplace.token_hosts; nowhere else.
func (c *Client) mayPresentToken(u *url.URL) bool {
	return c.sameOrigin(u) || (strings.EqualFold(u.Scheme, "https") && hostListed(u, c.tokenHosts()))
}

// configuredHost is true for the marketplace host and the token hosts: the
// only addresses a download may reach inside private networks.
func (c *Client) configuredHost(hostport string) bool {
	u := &url.URL{Scheme: "https", Host: hostport}
	bu := &url.URL{Scheme: c.base.Scheme, Host: c.base.Host}
	h, p, err := net.SplitHostPort(hostport)
	if err == nil && strings.EqualFold(h, bu.Hostname()) && p == effectivePort(bu) {
		return true
	}
	return hostListed(u, c.tokenHosts())
}

// checkDownloadURL applies the download rules to a marketplace-supplied URL
// (and to every redirect): https only, except the configured marketplace
// origin itself or development mode; no loopback, link-local or private
// address unless it is a configured marketplace host (or development mode).
func (c *Client) checkDownloadURL(u *url.URL) error {
	switch {
	case strings.EqualFold(u.Scheme, "https"):
	case c.sameOrigin(u):
	case strings.EqualFold(u.Scheme, "http") && c.opts.Development:
	default:
		return fmt.Errorf("%w: %s:// to %s (downloads are https only, outside development mode)", ErrInsecureURL, u.Scheme, u.Host)
	}
	if c.opts.Development || c.configuredHost(net.JoinHostPort(u.Hostname(), effectivePort(u))) {
		return nil
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("%w: %s is this machine", ErrForbiddenTarget, u.Host)
	}
	if a, err := netip.ParseAddr(host); err == nil && forbiddenAddr(a) {
		return fmt.Errorf("%w: %s is a loopback, link-local or private address", ErrForbiddenTarget, u.Host)
	}
	return nil
}

// forbiddenAddr: addresses a marketplace-supplied URL must not reach.
func forbiddenAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() ||
		cgnat.Contains(a)
}

// cgnat is the shared address space (RFC 6598): private in all but name.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// downloadRedirect keeps download redirects short and inside the rules:
// the target is checked like the first URL (no https→http downgrade, no
// private address), and the token survives only toward token hosts.
func (c *Client) downloadRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("marketplace: too many redirects")
	}
	if err := c.checkDownloadURL(req.URL); err != nil {
		return fmt.Errorf("redirect refused: %w", err)
	}
	if !c.mayPresentToken(req.URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

// downloadTransport is the client's transport, speaking HTTP/1.1 only, with
// a dialer that checks the address a name resolves to, so a DNS name
// pointing into a private network is refused like a literal address (also
// after redirects).
// Configured hosts, the environment's proxy and development mode are
// exempt. A caller-supplied non-*http.Transport is used as is (tests).
func (c *Client) downloadTransport(target *url.URL) http.RoundTripper {
	t, ok := c.transport.(*http.Transport)
	if !ok || c.opts.Development {
		return c.transport
	}
	t = t.Clone()
	// HTTP/1.1 only: its body is read from the socket, and the TLS
	// records decrypted, by the goroutine that reads the body, which for a
	// job is the engine's low-priority decrypt thread. HTTP/2 reads every
	// stream on the connection's own goroutine, at normal priority, where
	// that work would compete with Klipper.
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	if t.TLSClientConfig != nil { // a clone: ALPN must not offer h2 either
		t.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	var proxyAddr string
	if t.Proxy != nil {
		if pu, err := t.Proxy(&http.Request{URL: target}); err == nil && pu != nil {
			proxyAddr = net.JoinHostPort(pu.Hostname(), effectivePort(pu))
		}
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == proxyAddr || c.configuredHost(addr) {
			return dial(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if forbiddenAddr(a) {
				return nil, fmt.Errorf("%w: %s resolves to %s, a loopback, link-local or private address", ErrForbiddenTarget, host, a)
			}
		}
		var lastErr error
		for _, a := range addrs {
			conn, err := dial(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return conn, nil
			}
			lastErr = err
		}
		return nil, lastErr
	}
	return t
}

// withoutBody strips the answer body from an HTTP error: what reaches a
// job's failure report carries the status code only, never bytes a
// (possibly hostile) server chose.
func withoutBody(err error) error {
	var he *HTTPError
	if errors.As(err, &he) && he.Body != "" {
		return &HTTPError{Method: he.Method, URL: he.URL, StatusCode: he.StatusCode}
	}
	return err
}

// downloadOnce starts fetching the job's ciphertext and returns the body as
// a stream (Download retries it while the server is busy). The printer token goes only to the marketplace origin and the
// token hosts; storage hosts are fetched without it. A direct download
// refused with 401 or 403 is retried once through the marketplace's
// download proxy (with the token). The body is bounded by
// MaxDownloadBytes, DownloadTimeout (total) and DownloadIdleTimeout
// (between bytes); a body shorter than announced or cut off fails with
// ErrTruncated. Close releases everything.
func (c *Client) downloadOnce(ctx context.Context, jobID, downloadURL string) (*Download, error) {
	target, viaProxy, err := c.downloadTarget(ctx, jobID, downloadURL)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.DownloadTimeout)
	idle := newIdleWatch(c.opts.DownloadIdleTimeout, cancel)
	// The total and idle timeouts bound the transfer; no client timeout.
	transport := c.downloadTransport(target)
	// A transport cloned for this download holds its connections only
	// until the download ends.
	closeIdle := func() {
		if t, ok := transport.(*http.Transport); ok && transport != c.transport {
			t.CloseIdleConnections()
		}
	}
	hc := &http.Client{Transport: transport, CheckRedirect: c.downloadRedirect}
	resp, req, err := c.fetch(dctx, hc, target)
	if err == nil && !viaProxy && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		c.log.Info("marketplace: direct download refused, retrying through the download proxy",
			"job", jobID, "host", target.Host, "status", resp.StatusCode)
		drainClose(resp)
		target, viaProxy = c.proxyURL(jobID), true
		idle.arm()
		resp, req, err = c.fetch(dctx, hc, target)
	}
	if err != nil {
		idle.stop()
		cancel()
		closeIdle()
		if idle.fired() {
			return nil, fmt.Errorf("%w: %v", ErrIdleTimeout, err)
		}
		return nil, err
	}
	fail := func(err error) (*Download, error) {
		resp.Body.Close()
		idle.stop()
		cancel()
		closeIdle()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The status and Retry-After only: a failure report never
		// carries bytes a (possibly hostile) server chose.
		he := c.readHTTPError(req, resp)
		he.Body = ""
		return fail(he)
	}
	if resp.ContentLength > c.opts.MaxDownloadBytes {
		return fail(fmt.Errorf("%w: job %s announces %d bytes, cap %d", ErrTooLarge, jobID, resp.ContentLength, c.opts.MaxDownloadBytes))
	}
	if resp.ContentLength < 0 && resp.ProtoMajor == 1 && !slices.Contains(resp.TransferEncoding, "chunked") {
		return fail(fmt.Errorf("%w (job %s)", ErrUnframedBody, jobID))
	}
	idle.disarm()
	c.log.Info("marketplace: download started", "job", jobID, "url", redact.URL(target), "via_proxy", viaProxy, "size", resp.ContentLength)
	body := &guardedBody{
		body: resp.Body, want: resp.ContentLength, limit: c.opts.MaxDownloadBytes,
		idle: idle, cancel: cancel, ctx: dctx, jobID: jobID, closeIdle: closeIdle,
	}
	return &Download{ReadCloser: withMinRate(body, c.opts.DownloadMinRate, c.opts.DownloadIdleTimeout, cancel, jobID),
		Size: body.want, ViaProxy: viaProxy}, nil
}

// fetch sends one download GET: with the token (refreshed once on 401) to
// the marketplace origin, with the token to a token host, without it
// anywhere else.
func (c *Client) fetch(ctx context.Context, hc *http.Client, target *url.URL) (*http.Response, *http.Request, error) {
	build := func(token string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("User-Agent", c.opts.UserAgent)
		req.Header.Set("Accept", "application/octet-stream")
		// Ciphertext does not compress; identity keeps Content-Length the
		// length we count, so truncation is always detectable.
		req.Header.Set("Accept-Encoding", "identity")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req, nil
	}
	var req *http.Request
	if c.sameOrigin(target) {
		resp, err := c.authedDo(ctx, hc, func(token string) (*http.Request, error) {
			r, err := build(token)
			req = r
			return r, err
		})
		return resp, req, err
	}
	token := ""
	if c.mayPresentToken(target) {
		tok, err := c.currentToken()
		if err != nil {
			return nil, nil, err
		}
		token = tok.Value
	}
	req, err := build(token)
	if err != nil {
		return nil, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, req, fmt.Errorf("marketplace: GET %s: %w", redact.URL(target), redact.Error(err))
	}
	return resp, req, nil
}

// drainClose reads a little of an unwanted body (so the connection can be
// reused) and closes it; the bytes are never kept.
func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// guardedBody enforces the size cap, the announced length and the timeouts
// on a response body, turning every way a transfer can go wrong into an
// error instead of an early io.EOF.
type guardedBody struct {
	body   io.ReadCloser
	want   int64 // Content-Length or -1
	limit  int64
	n      int64
	idle   *idleWatch
	cancel context.CancelFunc
	ctx    context.Context
	jobID  string
	err    error // sticky
	// closeIdle releases the download's own connections once it is closed.
	closeIdle func()
}

func (g *guardedBody) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read at most one byte past the cap, to tell "exactly cap" from "over".
	if room := g.limit - g.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	g.idle.arm()
	n, err := g.body.Read(p)
	g.idle.disarm()
	g.n += int64(n)
	if g.n > g.limit {
		g.err = fmt.Errorf("%w: job %s passed %d bytes", ErrTooLarge, g.jobID, g.limit)
		return 0, g.err
	}
	if g.want >= 0 && g.n > g.want {
		g.err = fmt.Errorf("%w: job %s sent more than the %d bytes announced", ErrBadResponse, g.jobID, g.want)
		return 0, g.err
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) && (g.want < 0 || g.n == g.want):
		g.err = io.EOF
		g.idle.stop()
		return n, io.EOF
	case errors.Is(err, io.EOF):
		g.err = fmt.Errorf("%w: job %s: %d of %d bytes", ErrTruncated, g.jobID, g.n, g.want)
	case g.idle.fired():
		g.err = fmt.Errorf("%w: job %s after %d bytes", ErrIdleTimeout, g.jobID, g.n)
	case errors.Is(g.ctx.Err(), context.DeadlineExceeded):
		g.err = fmt.Errorf("%w: job %s: total download timeout after %d bytes", ErrTruncated, g.jobID, g.n)
	default:
		g.err = fmt.Errorf("%w: job %s after %d bytes: %v", ErrTruncated, g.jobID, g.n, redact.Error(err))
	}
	return n, g.err
}

func (g *guardedBody) Close() error {
	g.idle.stop()
	err := g.body.Close()
	g.cancel()
	g.closeIdle()
	if g.err == nil {
		g.err = errors.New("marketplace: download closed")
	}
	return err
}

// idleWatch cancels the transfer when the server makes no progress for d.
// It is armed only while we wait on the network (the request, then each
// Read), so a slow consumer never counts as a stalled server.
type idleWatch struct {
	d    time.Duration
	mu   sync.Mutex
	t    *time.Timer
	fire bool
	done bool
}

func newIdleWatch(d time.Duration, cancel context.CancelFunc) *idleWatch {
	w := &idleWatch{d: d}
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.done {
			return
		}
		w.fire = true
		cancel()
	})
	return w
}

// arm starts a fresh idle period.
func (w *idleWatch) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && !w.fire {
		w.t.Reset(w.d)
	}
}

// disarm pauses the watch while the consumer has the data.
func (w *idleWatch) disarm() { w.t.Stop() }

func (w *idleWatch) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
	w.t.Stop()
}

func (w *idleWatch) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fire
}

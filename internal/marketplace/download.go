package marketplace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
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

// downloadTarget decides where the ciphertext of job is fetched from: the
// marketplace proxy for storage-proxy hosts (and when the job has no URL
// but a gcode_file_url on such a host), the job's URL otherwise.
func (c *Client) downloadTarget(ctx context.Context, job Job) (*url.URL, bool, error) {
	raw := job.DownloadURL
	if raw == "" {
		var err error
		if raw, err = c.JobFileURL(ctx, job.ID); err != nil {
			return nil, false, fmt.Errorf("%w (and get-print-job failed: %v)", ErrNoDownloadURL, err)
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, false, fmt.Errorf("%w: job %s download URL is not absolute", ErrBadResponse, job.ID)
	}
	if c.isStorageProxyHost(u) {
		return c.endpoint(c.paths.downloadProxy, url.Values{"print_job_id": {job.ID}}), true, nil
	}
	if err := c.checkScheme(u); err != nil {
		return nil, false, fmt.Errorf("marketplace: job %s download URL: %w", job.ID, err)
	}
	return u, false, nil
}

func (c *Client) isStorageProxyHost(u *url.URL) bool {
	h := strings.ToLower(u.Hostname())
	hp := strings.ToLower(u.Host)
	return slices.ContainsFunc(c.opts.StorageProxyHosts, func(s string) bool {
		s = strings.ToLower(s)
		return h == s || hp == s || strings.HasSuffix(h, "."+s)
	})
}

// downloadOnce starts fetching the job's ciphertext and returns the body as
// a stream. The printer token goes only to the marketplace origin. The body
// is bounded by MaxDownloadBytes, DownloadTimeout (total) and
// DownloadIdleTimeout (between bytes); a body shorter than announced or
// cut off fails with ErrTruncated. Close releases everything.
func (c *Client) downloadOnce(ctx context.Context, job Job) (*Download, error) {
	target, viaProxy, err := c.downloadTarget(ctx, job)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.DownloadTimeout)
	idle := newIdleWatch(c.opts.DownloadIdleTimeout, cancel)
	// The total and idle timeouts bound the transfer; no client timeout.
	hc := &http.Client{Transport: c.transport, CheckRedirect: c.checkRedirect}
	build := func(token string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(dctx, http.MethodGet, target.String(), nil)
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
	var resp *http.Response
	var req *http.Request
	if c.sameOrigin(target) {
		resp, err = c.authedDo(dctx, hc, func(token string) (*http.Request, error) {
			req, err = build(token)
			return req, err
		})
	} else {
		// A foreign host (signed storage URL): no token, ever.
		if req, err = build(""); err == nil {
			resp, err = hc.Do(req)
			if err != nil {
				err = fmt.Errorf("marketplace: GET %s: %w", redactURL(target), redactErr(err))
			}
		}
	}
	if err != nil {
		idle.stop()
		cancel()
		if idle.fired() {
			return nil, fmt.Errorf("%w: %v", ErrIdleTimeout, err)
		}
		return nil, err
	}
	fail := func(err error) (*Download, error) {
		resp.Body.Close()
		idle.stop()
		cancel()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fail(c.readHTTPError(req, resp))
	}
	if resp.ContentLength > c.opts.MaxDownloadBytes {
		return fail(fmt.Errorf("%w: job %s announces %d bytes, cap %d", ErrTooLarge, job.ID, resp.ContentLength, c.opts.MaxDownloadBytes))
	}
	if resp.ContentLength < 0 && resp.ProtoMajor == 1 && !slices.Contains(resp.TransferEncoding, "chunked") {
		return fail(fmt.Errorf("%w (job %s)", ErrUnframedBody, job.ID))
	}
	idle.disarm()
	c.log.Info("marketplace: download started", "job", job.ID, "url", redactURL(target), "via_proxy", viaProxy, "size", resp.ContentLength)
	body := &guardedBody{
		body: resp.Body, want: resp.ContentLength, limit: c.opts.MaxDownloadBytes,
		idle: idle, cancel: cancel, ctx: dctx, jobID: job.ID,
	}
	return &Download{ReadCloser: body, Size: body.want, ViaProxy: viaProxy}, nil
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
		g.err = fmt.Errorf("%w: job %s after %d bytes: %v", ErrTruncated, g.jobID, g.n, redactErr(err))
	}
	return n, g.err
}

func (g *guardedBody) Close() error {
	g.idle.stop()
	err := g.body.Close()
	g.cancel()
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

package marketplace

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/clock"
)

// DefaultMaxRetryAfter caps how long a server's Retry-After can park a
// loop: a typo on the server (Retry-After: 86400) must not silence a
// printer for a day.
const DefaultMaxRetryAfter = 30 * time.Minute

// ParseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): delay
// seconds, or an HTTP date (IMF-fixdate, RFC 850 or asctime) taken
// relative to now. A date in the past means "now" (0, true).
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		// Beyond any cap anyway; avoids overflowing the Duration.
		return time.Duration(min(n, 1<<31)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// RetryAfter is the server's Retry-After carried by err (a 429 or 503
// answer), already capped.
func RetryAfter(err error) (time.Duration, bool) {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.ServerWait()
	}
	return 0, false
}

// reachability tells whether the marketplace answered lately. Loops in
// error backoff wait on recovered(): the first call that gets an answer
// again (any loop's, or a push stream that connects) ends every backoff.
type reachability struct {
	mu        sync.Mutex
	down      bool
	since     time.Time
	recovered chan struct{}
}

func (r *reachability) init() { r.recovered = make(chan struct{}) }

// noteAnswer records the HTTP status of a marketplace call: 5xx, 408 and
// 429 say the marketplace is not serving; any other answer says it is.
func (c *Client) noteAnswer(code int) {
	if code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests {
		c.noteUnreachable()
		return
	}
	c.noteReachable()
}

// noteUnreachable records a call that got no usable answer.
func (c *Client) noteUnreachable() {
	r := &c.reach
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		r.down, r.since = true, c.clock.Now()
	}
}

// noteReachable records a working call (or push stream); on the way back
// from unreachable it wakes everything waiting in Recovered.
func (c *Client) noteReachable() {
	r := &c.reach
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		return
	}
	c.log.Info("marketplace: reachable again", "down_for", c.clock.Now().Sub(r.since).Round(time.Second))
	r.down = false
	close(r.recovered)
	r.recovered = make(chan struct{})
}

// Recovered is closed the next time the marketplace answers after a
// failure: loops in error backoff retry at once instead of waiting out
// their backoff.
func (c *Client) Recovered() <-chan struct{} {
	c.reach.mu.Lock()
	defer c.reach.mu.Unlock()
	return c.reach.recovered
}

// Unreachable reports since when calls have failed (zero when they work).
func (c *Client) Unreachable() (since time.Time, down bool) {
	c.reach.mu.Lock()
	defer c.reach.mu.Unlock()
	return c.reach.since, c.reach.down
}

// Download waits for a server that is busy (429) or down for maintenance
// (503) at most this long in all, then gives up with the last answer.
const maxDownloadBusyWait = 10 * time.Minute

// Download starts fetching the ciphertext of job jobID from its
// downloadURL (Job.DownloadURL; "" asks the marketplace for it) and returns the body as a
// stream (see downloadOnce). A 429 or 503 answer is retried after the
// server's Retry-After (capped, with jitter) or a backoff from 5 s, for at
// most maxDownloadBusyWait in all: a busy marketplace delays a job, it
// does not fail it.
func (c *Client) Download(ctx context.Context, jobID, downloadURL string) (*Download, error) {
	bo := backoff.Backoff{Min: 5 * time.Second, Max: 2 * time.Minute}
	var waited time.Duration
	for {
		d, err := c.downloadOnce(ctx, jobID, downloadURL)
		code := statusCode(err)
		if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
			return d, err
		}
		wait := backoff.AfterServerWait(err, backoff.Jitter(bo.Next(), 0.2))
		if waited+wait > maxDownloadBusyWait {
			return nil, err
		}
		waited += wait
		c.log.Info("marketplace: download refused for now, retrying", "job", jobID, "in", wait, "err", err)
		if err := clock.Sleep(ctx, c.clock, wait); err != nil {
			return nil, err
		}
	}
}

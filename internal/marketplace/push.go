package marketplace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// PushOptions tune the push stream. Zero values take the defaults.
type PushOptions struct {
	ReadTimeout  time.Duration // no byte (event or keep-alive) for this long ⇒ reconnect; 0 ⇒ 60 s
	MaxStreamAge time.Duration // recycle a healthy stream after this long; 0 ⇒ 30 min
	RetryMin     time.Duration // reconnect backoff start; 0 ⇒ 1 s
	RetryMax     time.Duration // reconnect backoff cap; 0 ⇒ 5 min
}

// ErrStreamStalled: the push stream sent nothing within the read timeout.
var ErrStreamStalled = errors.New("marketplace: push stream silent past the read timeout")

// PushURL is the Realtime Database queue stream of the paired printer.
func (c *Client) PushURL() (string, error) {
	tok, err := c.currentToken()
	if err != nil {
		return "", err
	}
	u := *c.pushBase
	u.Path = strings.TrimRight(u.Path, "/") + "/printers/" + url.PathEscape(tok.PrinterID) + "/queue.json"
	return u.String(), nil
}

// RunPush keeps the push stream open until ctx ends and calls onChange for
// every put or patch event (the first put arrives on connect). A silent
// stream is dropped after ReadTimeout, a healthy one recycled after
// MaxStreamAge, and failures reconnect with backoff. The printer token is
// not sent: the stream is on a foreign host.
func (c *Client) RunPush(ctx context.Context, o PushOptions, onChange func()) error {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	if o.MaxStreamAge <= 0 {
		o.MaxStreamAge = 30 * time.Minute
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	bo := backoff{min: o.RetryMin, max: o.RetryMax}
	for {
		raw, err := c.PushURL()
		if err != nil {
			return err
		}
		events, err := c.streamOnce(ctx, raw, o, onChange)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if events > 0 {
			bo.reset() // the stream worked; a fresh failure starts short
		}
		if err == nil {
			c.log.Debug("marketplace: push stream recycled")
			continue
		}
		d := jitter(bo.next(), 0.2)
		c.log.Info("marketplace: push stream down, reconnecting", "in", d, "err", err)
		if err := sleep(ctx, c.clock, d); err != nil {
			return err
		}
	}
}

// streamOnce holds one stream. nil means recycled on schedule.
func (c *Client) streamOnce(ctx context.Context, raw string, o PushOptions, onChange func()) (events int, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := newIdleWatch(o.ReadTimeout, cancel)
	defer idle.stop()
	var recycled atomic.Bool
	age := time.AfterFunc(o.MaxStreamAge, func() { recycled.Store(true); cancel() })
	defer age.Stop()

	req, err := http.NewRequestWithContext(sctx, http.MethodGet, raw, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	hc := &http.Client{Transport: c.transport, CheckRedirect: c.checkRedirect}
	resp, err := hc.Do(req)
	if err != nil {
		if idle.fired() {
			return 0, ErrStreamStalled
		}
		return 0, fmt.Errorf("marketplace: push stream: %w", redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, readHTTPError(req, resp)
	}
	idle.arm()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var event string
	for sc.Scan() {
		idle.arm() // any line, keep-alives included, proves the stream alive
		line := sc.Text()
		switch {
		case line == "":
			if event == "put" || event == "patch" {
				events++
				onChange()
			} else if event == "cancel" || event == "auth_revoked" {
				return events, fmt.Errorf("marketplace: push stream closed by server (%s)", event)
			}
			event = ""
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		}
	}
	switch {
	case recycled.Load():
		return events, nil
	case idle.fired():
		return events, ErrStreamStalled
	case sc.Err() != nil:
		return events, fmt.Errorf("marketplace: push stream: %w", redactErr(sc.Err()))
	}
	return events, errors.New("marketplace: push stream ended by server")
}

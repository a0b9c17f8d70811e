package marketplace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// PushOptions tune the push stream. Zero values take the defaults.
type PushOptions struct {
	ReadTimeout  time.Duration // no byte (event or keep-alive) for this long ⇒ reconnect; 0 ⇒ 60 s
	MaxStreamAge time.Duration // recycle a healthy stream after this long; 0 ⇒ 30 min
	RetryMin     time.Duration // reconnect backoff start; 0 ⇒ 1 s
	RetryMax     time.Duration // reconnect backoff cap; 0 ⇒ 5 min
	// StableAfter is how long a stream must stay up before its end starts
	// the backoff afresh; 0 ⇒ 60 s. A stream that sends its first put and
	// closes (a flapping proxy or database) thus keeps backing off.
	StableAfter time.Duration
	// OnHealth is told when the stream is connected (its first event
	// arrived) and when it is down; nil ⇒ nobody.
	OnHealth func(up bool)
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
// every put or patch event that may bring something new. The put that
// opens every connection is the whole queue: it calls onChange only when
// it differs from the last queue seen (an empty queue on the first
// connection included), so a reconnect costs no poll when nothing changed.
// A silent stream is dropped after ReadTimeout, a healthy one recycled
// after MaxStreamAge, and failures reconnect with backoff that restarts
// only after a stream stayed up StableAfter. The printer token is not
// sent: the stream is on a foreign host.
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
	if o.StableAfter <= 0 {
		o.StableAfter = 60 * time.Second
	}
	health := func(bool) {}
	if o.OnHealth != nil {
		health = o.OnHealth
	}
	bo := backoff.Backoff{Min: o.RetryMin, Max: o.RetryMax}
	s := pushSession{lastQueue: emptyQueue, onChange: onChange, onConnect: func() {
		health(true)
		// The stream's host answered: the marketplace side is back.
		c.noteReachable()
	}}
	for {
		raw, err := c.PushURL()
		if err != nil {
			return err
		}
		start := c.clock.Now()
		err = c.streamOnce(ctx, raw, o, &s)
		health(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.clock.Now().Sub(start) >= o.StableAfter {
			bo.Reset() // the stream held; a fresh failure starts short
		}
		if err == nil {
			c.log.Debug("marketplace: push stream recycled")
			continue
		}
		d := backoff.AfterServerWait(err, backoff.Jitter(bo.Next(), 0.2))
		c.log.Info("marketplace: push stream down, reconnecting", "in", d, "err", err)
		if err := clock.Sleep(ctx, c.clock, d); err != nil {
			return err
		}
	}
}

// emptyQueue is the canonical form of a put of an empty queue.
const emptyQueue = "{}"

// pushSession is what RunPush keeps across connections.
type pushSession struct {
	lastQueue string // the queue as of the last root put; "" after a patch
	onChange  func()
	onConnect func()
}

// event handles one complete put or patch.
func (s *pushSession) event(kind, data string, first bool) {
	if kind == "put" {
		var ev struct {
			Path string          `json:"path"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal([]byte(data), &ev) == nil && ev.Path == "/" {
			q := canonicalQueue(ev.Data)
			same := q == s.lastQueue
			s.lastQueue = q
			if first && same {
				return // a reconnect that shows nothing new
			}
			s.onChange()
			return
		}
	}
	s.lastQueue = "" // a partial update: the next root put is news
	s.onChange()
}

// canonicalQueue renders a queue node so equal queues compare equal
// (object keys sorted; null and {} both empty).
func canonicalQueue(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	if m, ok := v.(map[string]any); v == nil || ok && len(m) == 0 {
		return emptyQueue
	}
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

// streamOnce holds one stream. nil means recycled on schedule.
func (c *Client) streamOnce(ctx context.Context, raw string, o PushOptions, s *pushSession) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := newIdleWatch(o.ReadTimeout, cancel)
	defer idle.stop()
	var recycled atomic.Bool
	age := time.AfterFunc(o.MaxStreamAge, func() { recycled.Store(true); cancel() })
	defer age.Stop()

	req, err := http.NewRequestWithContext(sctx, http.MethodGet, raw, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	hc := &http.Client{Transport: c.transport, CheckRedirect: c.checkRedirect}
	resp, err := hc.Do(req)
	if err != nil {
		if idle.fired() {
			return ErrStreamStalled
		}
		return fmt.Errorf("marketplace: push stream: %w", redact.Error(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.readHTTPError(req, resp)
	}
	idle.arm()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var event string
	var data strings.Builder
	events := 0
	for sc.Scan() {
		idle.arm() // any line, keep-alives included, proves the stream alive
		line := sc.Text()
		switch {
		case line == "":
			switch event {
			case "put", "patch":
				if events == 0 {
					s.onConnect()
				}
				s.event(event, data.String(), events == 0)
				events++
			case "cancel", "auth_revoked":
				return fmt.Errorf("marketplace: push stream closed by server (%s)", event)
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	switch {
	case recycled.Load():
		return nil
	case idle.fired():
		return ErrStreamStalled
	case sc.Err() != nil:
		return fmt.Errorf("marketplace: push stream: %w", redact.Error(sc.Err()))
	}
	return errors.New("marketplace: push stream ended by server")
}

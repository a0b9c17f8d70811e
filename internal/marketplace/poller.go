package marketplace

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
)

// Poll timing defaults. A fleet of 10 000 printers with a healthy push
// stream then makes about 10 000/(20·60) ≈ 8 polls/s instead of 170.
const (
	// DefaultPushPollInterval is the safety poll while the push stream is
	// healthy: pushes bring new jobs; the poll only catches a lost event.
	DefaultPushPollInterval = 20 * time.Minute
	// DefaultPollMinInterval is the floor between two polls.
	DefaultPollMinInterval = time.Second
	// DefaultPollBurst and DefaultPollRefill shape the token bucket of
	// push-triggered polls: back-to-back jobs start at once, a stream
	// that chatters cannot drive more than one poll per refill.
	DefaultPollBurst  = 3
	DefaultPollRefill = 10 * time.Second
	// DefaultPollMaxBackoff caps the error backoff.
	DefaultPollMaxBackoff = 5 * time.Minute
)

// PollerOptions tune a Poller. Zero values take the defaults.
type PollerOptions struct {
	// Interval between polls while the push stream is not healthy
	// (check_interval); 0 ⇒ 60 s.
	Interval time.Duration
	// PushInterval between polls while the push stream is healthy;
	// 0 ⇒ DefaultPushPollInterval, never below Interval.
	PushInterval time.Duration
	// MinInterval is the floor between two polls, triggered ones
	// included; 0 ⇒ DefaultPollMinInterval.
	MinInterval time.Duration
	// Burst and Refill: the token bucket of triggered polls.
	Burst  int
	Refill time.Duration
	// MaxBackoff caps the error backoff (which starts at 5 s and
	// doubles); 0 ⇒ DefaultPollMaxBackoff.
	MaxBackoff time.Duration
	// Jitter spreads every scheduled wait d over [(1-Jitter)·d,
	// (1+Jitter)·d]; 0 ⇒ 0.5 (the whole interval). Push-only printers use a
	// narrow one so their safety poll never comes sooner than 5 minutes.
	Jitter float64
	// Rand draws the jitter, uniform in [0,1); nil ⇒ math/rand/v2.
	Rand func() float64
}

// Poller polls the queue, one poll at a time. The first poll comes after a
// random delay within the interval and every later wait is drawn from
// [½, 1½]·interval (by default: see Jitter), so printers started in the same second (an upgrade
// wave, a power cut) never poll in step. The interval is PushInterval
// while the push stream is healthy, Interval otherwise. A push trigger
// polls at once (token bucket, MinInterval floor). Errors back off
// exponentially, at least the server's Retry-After; the backoff ends early
// when the marketplace answers again (any call, or the push stream
// connecting). Jobs already seen in the previous successful poll are not
// handed out again.
type Poller struct {
	c       *Client
	o       PollerOptions
	trigger chan struct{}
	health  chan struct{}

	mu       sync.Mutex // single flight
	previous map[string]struct{}
	skipped  map[string]bool // skipped entries already warned about

	hmu    sync.Mutex
	pushUp bool
}

// NewPoller makes a poller for c.
func (c *Client) NewPoller(o PollerOptions) *Poller {
	if o.MinInterval <= 0 {
		o.MinInterval = DefaultPollMinInterval
	}
	if o.Interval <= 0 {
		o.Interval = 60 * time.Second
	}
	o.Interval = max(o.Interval, o.MinInterval)
	if o.PushInterval <= 0 {
		o.PushInterval = DefaultPushPollInterval
	}
	o.PushInterval = max(o.PushInterval, o.Interval)
	if o.Burst <= 0 {
		o.Burst = DefaultPollBurst
	}
	if o.Refill <= 0 {
		o.Refill = DefaultPollRefill
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultPollMaxBackoff
	}
	if o.Jitter <= 0 || o.Jitter > 1 {
		o.Jitter = 0.5
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	return &Poller{c: c, o: o, trigger: make(chan struct{}, 1), health: make(chan struct{}, 1)}
}

// Trigger asks for a poll now. Triggers arriving while one is pending or
// running coalesce into one poll; it never blocks.
func (p *Poller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// SetPushHealthy tells the poller whether the push stream is connected:
// it then polls at PushInterval instead of Interval, and a stream that
// (re)connects ends an error backoff.
func (p *Poller) SetPushHealthy(up bool) {
	p.hmu.Lock()
	changed := p.pushUp != up
	p.pushUp = up
	p.hmu.Unlock()
	if changed {
		select {
		case p.health <- struct{}{}:
		default:
		}
	}
}

func (p *Poller) pushHealthy() bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return p.pushUp
}

// interval is the current spacing of scheduled polls.
func (p *Poller) interval() time.Duration {
	if p.pushHealthy() {
		return p.o.PushInterval
	}
	return p.o.Interval
}

// spread draws a wait from [(1-Jitter)·d, (1+Jitter)·d].
func (p *Poller) spread(d time.Duration) time.Duration {
	return backoff.Spread(d, p.o.Jitter, p.o.Rand())
}

// PollOnce polls now and returns the jobs not present in the previous
// successful poll. Concurrent calls are serialised.
func (p *Poller) PollOnce(ctx context.Context) ([]Job, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.skipped == nil {
		p.skipped = map[string]bool{}
	}
	jobs, err := p.c.poll(ctx, p.skipped)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{}, len(jobs))
	var fresh []Job
	for _, j := range jobs {
		if _, dup := seen[j.ID]; dup {
			continue // listed twice in one answer
		}
		seen[j.ID] = struct{}{}
		if _, old := p.previous[j.ID]; !old {
			fresh = append(fresh, j)
		}
	}
	p.previous = seen
	return fresh, nil
}

// bucket is the token bucket of triggered polls.
type bucket struct {
	tokens float64
	at     time.Time
	burst  float64
	refill time.Duration
}

func (b *bucket) fill(now time.Time) {
	b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.at))/float64(b.refill))
	b.at = now
}

// readyAt is when the next token is there.
func (b *bucket) readyAt(now time.Time) time.Time {
	b.fill(now)
	if b.tokens >= 1 {
		return now
	}
	return now.Add(time.Duration((1 - b.tokens) * float64(b.refill)))
}

// Run polls until ctx ends, handing every new job to handle (synchronously,
// in queue order). It returns ctx's error, or ErrPairingLost / ErrNotPaired
// when there is no usable token any more.
func (p *Poller) Run(ctx context.Context, handle func(context.Context, []Job)) error {
	if _, err := p.c.currentToken(); err != nil {
		return err
	}
	select {
	case <-p.health: // a change before Run: interval() reads the state anyway
	default:
	}
	clk := p.c.clock
	bo := backoff.Backoff{Min: 5 * time.Second, Max: p.o.MaxBackoff}
	now := clk.Now()
	tokens := bucket{tokens: float64(p.o.Burst), at: now, burst: float64(p.o.Burst), refill: p.o.Refill}
	// The first poll: anywhere within the interval.
	next := now.Add(time.Duration(p.o.Rand() * float64(p.o.Interval)))
	var (
		lastStart time.Time // start of the last poll (zero: none yet)
		failing   bool      // next is an error backoff
		notBefore time.Time // the server's Retry-After
		pending   bool      // a trigger waits for the bucket or the floor
		triggered bool      // this poll spends a token
	)
	recovered := p.c.Recovered()
	for {
		// Wait for next, a trigger, a change of push health or the
		// marketplace coming back.
		for {
			now = clk.Now()
			at := next
			if pending && !failing {
				t := tokens.readyAt(now)
				if !lastStart.IsZero() {
					t = later(t, lastStart.Add(p.o.MinInterval))
				}
				if t.Before(at) {
					at, triggered = t, true
				} else {
					triggered = false
				}
			}
			if !at.After(now) {
				break
			}
			fired := false
			timer := clk.NewTimer(at.Sub(now))
			select {
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			case <-timer.C():
				fired = true
			case <-p.trigger:
				pending = true
			case <-p.health:
				now = clk.Now()
				switch {
				case failing && p.pushHealthy():
					// A working push stream ends the error backoff.
					next, failing = later(now, notBefore), false
				case !failing && !p.pushHealthy() && !lastStart.IsZero():
					// Push lost: back to the check_interval cadence.
					next = earlier(next, lastStart.Add(p.spread(p.o.Interval)))
				}
			case <-recovered:
				recovered = p.c.Recovered()
				if failing {
					next, failing = later(clk.Now(), notBefore), false
				}
			}
			timer.Stop()
			if fired {
				break
			}
		}
		now = clk.Now()
		if triggered {
			tokens.fill(now)
			tokens.tokens--
		}
		pending, triggered = false, false
		lastStart = now
		// Taken before the poll: when the poll fails and another call
		// gets through before the wait begins, that recovery still ends
		// the backoff.
		recovered = p.c.Recovered()
		jobs, err := p.PollOnce(ctx)
		now = clk.Now()
		switch {
		case errors.Is(err, ErrPairingLost), errors.Is(err, ErrNotPaired):
			return err
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			wait := backoff.AfterServerWait(err, backoff.Spread(bo.Next(), 0.2, p.o.Rand()))
			if ra, ok := RetryAfter(err); ok {
				notBefore = now.Add(ra)
			}
			next, failing = now.Add(wait), true
			p.c.log.Warn("marketplace: poll failed, backing off", "retry_in", wait, "err", err)
		default:
			bo.Reset()
			next, failing, notBefore = now.Add(p.spread(p.interval())), false, time.Time{}
			if len(jobs) > 0 {
				p.c.log.Info("marketplace: new jobs", "count", len(jobs))
				handle(ctx, jobs)
			}
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

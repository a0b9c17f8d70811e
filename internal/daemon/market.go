package daemon

import (
	"cmp"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

// runMarketplace runs the poller, the push stream and the token refresher
// while the printer is paired, and restarts them when the pairing or the
// settings change.
func (d *daemon) runMarketplace(ctx context.Context) {
	// With api_profile "auto" and nothing conclusive, the loops wait for
	// the probe: polling the wrong era's paths helps no one.
	select {
	case <-ctx.Done():
		return
	case <-d.profileReady:
	}
	for {
		client := d.mkt.Load()
		_, paired := client.Token()
		if paired && !client.PairingLost() {
			d.runLoops(ctx, client)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.loopsRestart:
		}
	}
}

// kickLoops restarts the marketplace loops (new pairing, lost pairing,
// reloaded settings).
func (d *daemon) kickLoops() {
	select {
	case d.loopsRestart <- struct{}{}:
	default:
	}
}

func (d *daemon) runLoops(parent context.Context, client *marketplace.Client) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	cfg := d.cfg.Load()
	// check_interval 0 (push only) polls at the safety interval with a
	// narrow jitter, so never sooner than every 5 minutes.
	every, jitter := cfg.PollSchedule()
	poller := client.NewPoller(marketplace.PollerOptions{
		Interval:     d.scaled(every),
		PushInterval: d.scaled(marketplace.DefaultPushPollInterval),
		MinInterval:  cmp.Or(d.o.PollMinInterval, d.scaled(marketplace.DefaultPollMinInterval)),
		Refill:       d.scaled(marketplace.DefaultPollRefill),
		MaxBackoff:   d.scaled(marketplace.DefaultPollMaxBackoff),
		Jitter:       jitter,
		Rand:         d.o.Jitter,
	})
	d.poller.Store(poller)
	defer d.poller.Store(nil)
	// The marketplace answering again ends the status outbox's backoff
	// (the poller watches the same signal itself).
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-client.Recovered():
				d.engine.MarketplaceBack()
			}
		}
	}()

	var wg sync.WaitGroup
	ended := make(chan error, 3)
	run := func(f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); ended <- f() }()
	}
	run(func() error {
		return poller.Run(ctx, func(ctx context.Context, js []marketplace.Job) {
			d.notePoll(nil)
			d.engine.Offer(adapters.Offers(js))
		})
	})
	run(func() error {
		return client.RunTokenRefresher(ctx, marketplace.RefresherOptions{
			RetryMin: d.scaled(30 * time.Second), RetryMax: d.scaled(time.Hour)})
	})
	if cfg.Push.Enabled {
		run(func() error {
			return client.RunPush(ctx, marketplace.PushOptions{
				RetryMin: d.scaled(time.Second), RetryMax: d.scaled(5 * time.Minute),
				StableAfter: d.scaled(time.Minute), OnHealth: func(up bool) {
					d.pushUp.Store(up)
					poller.SetPushHealthy(up)
				},
			}, poller.Trigger)
		})
	}
	if cfg.PushOnly() {
		d.log.Info("marketplace: push only (check_interval 0); safety poll", "every", every, "jitter", jitter, "push", cfg.Push.Enabled)
	} else {
		d.log.Info("marketplace: polling", "every", every, "push", cfg.Push.Enabled)
	}
	select {
	case <-ctx.Done():
	case err := <-ended:
		if err != nil && !errors.Is(err, context.Canceled) {
			d.log.Warn("marketplace: loops stopped", "err", err)
		}
	case <-d.loopsRestart:
		d.kickLoops() // let runMarketplace see it after the loops ended
	}
	cancel()
	wg.Wait()
}

// scaled is d under Options.TimeScale.
func (d *daemon) scaled(v time.Duration) time.Duration {
	if d.o.TimeScale <= 0 {
		return v
	}
	return time.Duration(float64(v) / d.o.TimeScale)
}

// triggerPoll asks for a poll now (the engine after a restart, check_jobs).
func (d *daemon) triggerPoll() {
	if p := d.poller.Load(); p != nil {
		p.Trigger()
	}
}

func (d *daemon) notePoll(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastPoll = time.Now()
	d.lastPollErr = ""
	if err != nil {
		d.lastPollErr = err.Error()
	} else {
		d.lastPollOK = d.lastPoll
	}
}

// transfers tracks the body being read for the job being prepared, for
// status and the demo's progress lines.
type transfers struct {
	mu  sync.Mutex
	cur *transfer
}

type transfer struct {
	jobID    string
	total    int64 // -1 unknown
	started  time.Time
	done     atomic.Int64
	finished atomic.Int64 // unix nanoseconds; 0 while running
}

func (t *transfers) track(jobID string, rc io.ReadCloser, total int64) io.ReadCloser {
	tr := &transfer{jobID: jobID, total: total, started: time.Now()}
	t.mu.Lock()
	t.cur = tr
	t.mu.Unlock()
	return &countingBody{rc: rc, tr: tr, done: func() { tr.finished.Store(time.Now().UnixNano()) }}
}

func (t *transfers) current() *apitype.Transfer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil {
		return nil
	}
	tr := t.cur
	out := &apitype.Transfer{JobID: tr.jobID, Bytes: tr.done.Load(), Total: tr.total}
	end := time.Now()
	if f := tr.finished.Load(); f != 0 {
		out.Done, end = true, time.Unix(0, f)
	}
	out.Seconds = end.Sub(tr.started).Seconds()
	return out
}

type countingBody struct {
	rc   io.ReadCloser
	tr   *transfer
	done func()
	once sync.Once
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.tr.done.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error {
	c.once.Do(c.done)
	return c.rc.Close()
}

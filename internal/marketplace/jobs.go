package marketplace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Job is one entry of the print queue. DownloadURL, DEKPackage and IVHex are
// secrets of the job: String and LogValue leave them out.
type Job struct {
	ID            string
	PurchaseID    string
	Status        string
	CreatedAt     string
	DownloadURL   string // encrypted_gcode_download_url (may be a signed URL)
	DEKPackage    string // gcode_dek_encrypted_hex (current) or gcode_dek_package (legacy)
	IVHex         string // gcode_iv_hex
	UserAccountID string
	PrinterKEKID  string
}

func (j Job) String() string { return "job " + j.ID }

// LogValue implements slog.LogValuer with no URL, DEK package or IV.
func (j Job) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", j.ID), slog.String("status", j.Status), slog.String("purchase_id", j.PurchaseID))
}

type wireJob struct {
	PrintJobID    flexString `json:"print_job_id"`
	PurchaseID    flexString `json:"purchase_id"`
	Status        string     `json:"status"`
	CreatedAt     string     `json:"created_at"`
	DownloadURL   string     `json:"encrypted_gcode_download_url"`
	DEKHex        string     `json:"gcode_dek_encrypted_hex"`
	DEKPackage    string     `json:"gcode_dek_package"`
	IVHex         string     `json:"gcode_iv_hex"`
	UserAccountID flexString `json:"user_account_id"`
	PrinterKEKID  flexString `json:"printer_kek_id"`
}

// Poll fetches the print queue once (401 ⇒ refresh and retry once).
func (c *Client) Poll(ctx context.Context) ([]Job, error) {
	var ans struct {
		Jobs []wireJob `json:"jobs"`
	}
	if err := c.authedJSON(ctx, http.MethodGet, c.endpoint(c.paths.poll, nil), nil, &ans); err != nil {
		return nil, err
	}
	jobs := make([]Job, 0, len(ans.Jobs))
	for i, w := range ans.Jobs {
		if w.PrintJobID == "" {
			return nil, fmt.Errorf("%w: poll answer: job %d has no print_job_id", ErrBadResponse, i)
		}
		dek := w.DEKHex
		if dek == "" {
			dek = w.DEKPackage
		}
		jobs = append(jobs, Job{
			ID: string(w.PrintJobID), PurchaseID: string(w.PurchaseID), Status: w.Status, CreatedAt: w.CreatedAt,
			DownloadURL: w.DownloadURL, DEKPackage: dek, IVHex: w.IVHex,
			UserAccountID: string(w.UserAccountID), PrinterKEKID: string(w.PrinterKEKID),
		})
	}
	return jobs, nil
}

// JobFileURL asks get-print-job for the job's gcode_file_url: the fallback
// when a polled job carries no download URL.
func (c *Client) JobFileURL(ctx context.Context, jobID string) (string, error) {
	var ans struct {
		GcodeFileURL string `json:"gcode_file_url"`
	}
	u := c.endpoint(pathJobDetails, url.Values{"print_job_id": {jobID}})
	if err := c.authedJSON(ctx, http.MethodGet, u, nil, &ans); err != nil {
		return "", err
	}
	if ans.GcodeFileURL == "" {
		return "", fmt.Errorf("%w: get-print-job answer lacks gcode_file_url", ErrBadResponse)
	}
	return ans.GcodeFileURL, nil
}

// PollerOptions tune a Poller.
type PollerOptions struct {
	// Interval between polls when all is well (check_interval); 0 ⇒ 60 s.
	// Never below MinInterval.
	Interval time.Duration
	// MinInterval is the floor between two polls, triggered ones included.
	// 0 ⇒ 5 s (the spec's floor; lower it only in tests).
	MinInterval time.Duration
	// MaxBackoff caps the error backoff (which starts at MinInterval and
	// doubles); 0 ⇒ 5 min.
	MaxBackoff time.Duration
	// Jitter spreads every wait by ±this fraction; 0 ⇒ 0.1, <0 ⇒ none.
	Jitter float64
}

// Poller polls the queue: one poll at a time, at Interval with jitter,
// immediately (floor respected) when triggered by a push, with exponential
// backoff on errors. Jobs already seen in the previous successful poll are
// not handed out again.
type Poller struct {
	c       *Client
	o       PollerOptions
	trigger chan struct{}

	mu       sync.Mutex // single flight
	previous map[string]struct{}
}

// NewPoller makes a poller for c.
func (c *Client) NewPoller(o PollerOptions) *Poller {
	if o.MinInterval <= 0 {
		o.MinInterval = 5 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 60 * time.Second
	}
	o.Interval = max(o.Interval, o.MinInterval)
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.Jitter == 0 {
		o.Jitter = 0.1
	}
	return &Poller{c: c, o: o, trigger: make(chan struct{}, 1)}
}

// Trigger asks for a poll now. Triggers arriving while one is pending or
// running coalesce into one poll; it never blocks.
func (p *Poller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// PollOnce polls now and returns the jobs not present in the previous
// successful poll. Concurrent calls are serialised.
func (p *Poller) PollOnce(ctx context.Context) ([]Job, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	jobs, err := p.c.Poll(ctx)
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

// Run polls until ctx ends, handing every new job to handle (synchronously,
// in queue order). It returns ctx's error, or ErrPairingLost / ErrNotPaired
// when there is no usable token any more.
func (p *Poller) Run(ctx context.Context, handle func(context.Context, []Job)) error {
	bo := backoff{min: p.o.MinInterval, max: p.o.MaxBackoff}
	for {
		start := p.c.clock.Now()
		jobs, err := p.PollOnce(ctx)
		var wait time.Duration
		switch {
		case errors.Is(err, ErrPairingLost), errors.Is(err, ErrNotPaired):
			return err
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			wait = jitter(bo.next(), p.o.Jitter)
			p.c.log.Warn("marketplace: poll failed, backing off", "retry_in", wait, "err", err)
		default:
			bo.reset()
			wait = jitter(p.o.Interval, p.o.Jitter)
			if len(jobs) > 0 {
				p.c.log.Info("marketplace: new jobs", "count", len(jobs))
				handle(ctx, jobs)
			}
		}
		wait = max(wait, p.o.MinInterval)
		// A push may shorten a normal wait to the floor, never an error
		// backoff: a failing server gets no extra load from pushes.
		earliest := start.Add(p.o.MinInterval)
		if err != nil {
			earliest = start.Add(wait)
		}
		if err := p.waitNext(ctx, wait-p.c.clock.Now().Sub(start), earliest); err != nil {
			return err
		}
	}
}

// waitNext waits up to d for the next poll; a trigger ends the wait early
// but not before earliest.
func (p *Poller) waitNext(ctx context.Context, d time.Duration, earliest time.Time) error {
	timer := p.c.clock.After(max(d, 0))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer:
		return nil
	case <-p.trigger:
		rest := earliest.Sub(p.c.clock.Now())
		if rest <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			return nil
		case <-p.c.clock.After(rest):
			return nil
		}
	}
}

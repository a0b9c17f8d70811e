package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/metrics"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

// newMetrics builds the instance's metrics; the gauges read the daemon's
// parts at each scrape, so it may be built before they exist (nothing
// scrapes before the API serves).
func (d *daemon) newMetrics() *metrics.Metrics {
	return metrics.New(metrics.Options{
		Instance:     d.cfg.Load().Instance,
		Version:      version.Version,
		ErrorClasses: marketplace.RequestErrorClasses,
		Gauges: metrics.Gauges{
			Outbox: func() (int, time.Time) { return d.engine.Outbox() },
			Token: func() (time.Time, bool) {
				c := d.mkt.Load()
				tok, ok := c.Token()
				return tok.Expiry, ok && !c.PairingLost()
			},
			KlipperConnected: func() bool { return d.bridge.State().Connected },
			PushConnected:    d.pushUp.Load,
			LastPoll: func() time.Time {
				d.mu.Lock()
				defer d.mu.Unlock()
				return d.lastPollOK
			},
		},
	})
}

// jobTimes remembers when each job left the queue, for the time it takes
// to reach Klipper (lmntd_job_start_duration_seconds). A restart forgets
// the jobs in flight: their start is not measured.
type jobTimes struct {
	mu    sync.Mutex
	start map[string]time.Time
}

// onJobTransition counts a job's state change; the engine calls it with
// its lock held, so it only touches counters and this map.
func (d *daemon) onJobTransition(tr jobs.Transition) {
	d.metrics.JobEntered(string(tr.To))
	t := &d.jobTimes
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case tr.To == jobs.Downloading:
		if t.start == nil {
			t.start = map[string]time.Time{}
		}
		t.start[tr.ID] = tr.At
	case tr.To == jobs.Printing:
		if s, ok := t.start[tr.ID]; ok {
			d.metrics.JobStarted(tr.At.Sub(s))
		}
		delete(t.start, tr.ID)
	case tr.To.Terminal():
		delete(t.start, tr.ID)
	}
}

// textfileState is the last write of metrics.textfile, for lmnt doctor.
type textfileState struct {
	mu      sync.Mutex
	written time.Time
	err     error
}

func (s *textfileState) note(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err = err; err == nil {
		s.written = time.Now()
	}
}

// textfileCheck is lmnt doctor's view of the textfile (wanted, not required: the
// printer prints without it).
func (d *daemon) textfileCheck() (apitype.Check, bool) {
	path := d.cfg.Load().Metrics.Textfile
	if path == "" {
		return apitype.Check{}, false
	}
	s := &d.textfile
	s.mu.Lock()
	defer s.mu.Unlock()
	c := apitype.Check{Name: "metrics textfile", Result: apitype.CheckOK}
	switch {
	case s.err != nil:
		c.Result, c.Detail = apitype.CheckWarn, s.err.Error()
		c.Fix = "allow lmntd to write the directory: a unit drop-in with ReadWritePaths= and an ACL for user lmntd (README, farm section)"
	case s.written.IsZero():
		c.Result, c.Detail = apitype.CheckWarn, path+" not written yet"
	default:
		c.Detail = fmt.Sprintf("%s written %s ago", path, time.Since(s.written).Round(time.Second))
	}
	return c, true
}

// writeTextfile keeps metrics.textfile up to date for node_exporter's
// textfile collector, until ctx ends; then it writes the final values
// (node_textfile_mtime_seconds tells a stopped lmntd). A failure is
// logged when it starts and when it ends, not at every write.
func (d *daemon) writeTextfile(ctx context.Context) {
	cfg := d.cfg.Load()
	path := cfg.Metrics.Textfile
	var failing string
	write := func() {
		err := d.metrics.WriteTextfile(path)
		d.textfile.note(err)
		switch {
		case err != nil && err.Error() != failing:
			d.log.Warn("metrics: cannot write the textfile (lmntd's unit must be allowed to write its directory: see the README's farm section)",
				"err", err)
			failing = err.Error()
		case err == nil && failing != "":
			d.log.Info("metrics: textfile written again", "file", path)
			failing = ""
		}
	}
	t := time.NewTicker(cfg.Metrics.TextfileInterval)
	defer t.Stop()
	for {
		write()
		select {
		case <-ctx.Done():
			write()
			return
		case <-t.C:
		}
	}
}

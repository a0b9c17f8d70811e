// Package metrics is lmntd's Prometheus metrics: the counters and
// histograms the daemon updates as jobs move, and the gauges read from the
// daemon's state at each scrape, written in the Prometheus text format for
// the API's /metrics and for node_exporter's textfile collector.
//
// Every series carries lmnt_instance="NAME" (the config's instance, empty
// on a single-instance host, which Prometheus treats as no label): the
// textfile collector merges the files of all instances on a host, and a
// series must not collide with its neighbour's. The label is not called
// instance, which Prometheus sets to the scrape target.
package metrics

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// JobStates are the job engine's states, counted as jobs enter them.
var JobStates = []string{"accepted", "downloading", "ready", "printing", "paused", "succeeded", "failed", "cancelled"}

// Outcomes are the terminal job states.
var Outcomes = []string{"succeeded", "failed", "cancelled"}

// Gauges are read from the daemon at each scrape.
type Gauges struct {
	// Outbox is how many status reports wait for the marketplace and when
	// the oldest was queued (zero when none).
	Outbox func() (reports int, oldest time.Time)
	// Token is the printer token's expiry; ok false when not paired.
	Token func() (expiry time.Time, ok bool)
	// KlipperConnected: Klipper's extra is on the bridge.
	KlipperConnected func() bool
	// PushConnected: the push stream is connected.
	PushConnected func() bool
	// LastPoll is when the marketplace last answered a poll (zero: never).
	LastPoll func() time.Time
}

// Metrics are one lmntd instance's metrics.
type Metrics struct {
	set   *vm.Set
	label string // `lmnt_instance="NAME"`

	transitions map[string]*vm.Counter
	finished    map[string]*vm.Counter
	reqErrors   map[string]*vm.Counter
	decrypted   *vm.Counter
	decryptDur  *vm.PrometheusHistogram
	startDur    *vm.PrometheusHistogram
}

// Buckets of the duration histograms, in seconds: a small file decrypts in
// milliseconds, a 500 MB one on a Pi Zero takes minutes; a job's start
// includes its download.
var (
	decryptBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	startBuckets   = []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}
)

// Options say what New builds.
type Options struct {
	Instance string // the config's instance ("" on a single-instance host)
	Version  string // lmntd's, in lmntd_info
	// ErrorClasses are the classes of failed marketplace requests
	// (marketplace.RequestErrorClasses).
	ErrorClasses []string
	Gauges       Gauges
}

// New builds one instance's metrics.
func New(o Options) *Metrics {
	instance, version, g := o.Instance, o.Version, o.Gauges
	// TYPE lines make the histograms histograms to the scraper (the
	// library's switch is process-wide; lmntd has no other metrics).
	vm.ExposeMetadata(true)
	m := &Metrics{set: vm.NewSet(), label: `lmnt_instance=` + strconv.Quote(instance),
		transitions: map[string]*vm.Counter{}, finished: map[string]*vm.Counter{}, reqErrors: map[string]*vm.Counter{}}
	m.set.NewGauge(m.name("lmntd_info", "version", version), func() float64 { return 1 })
	// Every label value exists from the start, at 0: a rate() over a
	// series that appears only at its first increment misses that one.
	for _, s := range JobStates {
		m.transitions[s] = m.set.NewCounter(m.name("lmntd_job_transitions_total", "state", s))
	}
	for _, o := range Outcomes {
		m.finished[o] = m.set.NewCounter(m.name("lmntd_jobs_finished_total", "outcome", o))
	}
	for _, c := range o.ErrorClasses {
		m.reqErrors[c] = m.set.NewCounter(m.name("lmntd_marketplace_request_errors_total", "class", c))
	}
	m.decrypted = m.set.NewCounter(m.name("lmntd_decrypted_bytes_total"))
	m.decryptDur = m.set.NewPrometheusHistogramExt(m.name("lmntd_decrypt_duration_seconds"), decryptBuckets)
	m.startDur = m.set.NewPrometheusHistogramExt(m.name("lmntd_job_start_duration_seconds"), startBuckets)

	m.set.NewGauge(m.name("lmntd_outbox_reports"), func() float64 {
		n, _ := g.Outbox()
		return float64(n)
	})
	m.set.NewGauge(m.name("lmntd_outbox_oldest_age_seconds"), func() float64 {
		_, oldest := g.Outbox()
		if oldest.IsZero() {
			return 0
		}
		return time.Since(oldest).Seconds()
	})
	m.set.NewGauge(m.name("lmntd_paired"), func() float64 {
		_, ok := g.Token()
		return bool01(ok)
	})
	m.set.NewGauge(m.name("lmntd_token_expires_in_seconds"), func() float64 {
		// Negative once expired; 0 when not paired (lmntd_paired says
		// which) or when the token states no expiry.
		exp, ok := g.Token()
		if !ok || exp.IsZero() {
			return 0
		}
		return time.Until(exp).Seconds()
	})
	m.set.NewGauge(m.name("lmntd_klipper_connected"), func() float64 { return bool01(g.KlipperConnected()) })
	m.set.NewGauge(m.name("lmntd_push_connected"), func() float64 { return bool01(g.PushConnected()) })
	m.set.NewGauge(m.name("lmntd_last_successful_poll_timestamp_seconds"), func() float64 {
		t := g.LastPoll()
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	})
	return m
}

// name is a series name with the instance label and the label pairs kv.
func (m *Metrics) name(metric string, kv ...string) string {
	s := metric + "{" + m.label
	for i := 0; i+1 < len(kv); i += 2 {
		s += "," + kv[i] + "=" + strconv.Quote(kv[i+1])
	}
	return s + "}"
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// JobEntered counts a job entering state; at a terminal state it also
// counts the outcome.
func (m *Metrics) JobEntered(state string) {
	if c := m.transitions[state]; c != nil {
		c.Inc()
	}
	if c := m.finished[state]; c != nil {
		c.Inc()
	}
}

// JobStarted records how long a job took from leaving the queue (its
// download starting) until Klipper had the decrypted file.
func (m *Metrics) JobStarted(d time.Duration) { m.startDur.Update(d.Seconds()) }

// Decrypted records one decrypted job: its plaintext size and how long the
// decryption (with its download, which it streams from) took.
func (m *Metrics) Decrypted(bytes int64, d time.Duration) {
	m.decrypted.AddInt64(bytes) // not Add(int): a job may exceed 2 GiB on 32-bit ARM
	m.decryptDur.Update(d.Seconds())
}

// RequestFailed counts a failed marketplace request of class (one of
// Options.ErrorClasses; others are ignored).
func (m *Metrics) RequestFailed(class string) {
	if c := m.reqErrors[class]; c != nil {
		c.Inc()
	}
}

// WritePrometheus writes every metric in the Prometheus text format.
func (m *Metrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

// WriteTextfile replaces path with the metrics, atomically (node_exporter
// must never read half a file), readable by node_exporter's user.
func (m *Metrics) WriteTextfile(path string) error {
	var b bytes.Buffer
	m.WritePrometheus(&b)
	if err := atomicfile.WriteWith(path, b.Bytes(), atomicfile.Mode(0o644)); err != nil {
		return fmt.Errorf("metrics.textfile %s: %w", path, err)
	}
	return nil
}

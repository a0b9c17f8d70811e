package marketplace

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ErrTooSlow fails a download that stays below the minimum rate: a host
// trickling a byte every few seconds passes the idle timeout, and must not
// hold the job slot until the total timeout.
var ErrTooSlow = errors.New("marketplace: download too slow")

// minRateBody fails a body whose server delivers, on average, less than
// rate bytes per second of the time spent waiting for it, once a grace
// period (the idle timeout: connection set-up and slow starts) is used up.
// Time the consumer spends with the data (decrypting, writing the memfd)
// does not count. In effect the download has a deadline of grace + bytes
// received / rate, enforced also while a Read is blocked: abort cancels the
// transfer so the blocked Read returns.
type minRateBody struct {
	body  io.ReadCloser
	rate  int64 // bytes per second
	grace time.Duration
	abort func()
	jobID string

	n      int64
	waited time.Duration
	err    error // sticky

	mu      sync.Mutex
	tripped bool
}

func withMinRate(body io.ReadCloser, rate int64, grace time.Duration, abort func(), jobID string) io.ReadCloser {
	if rate <= 0 {
		return body
	}
	return &minRateBody{body: body, rate: rate, grace: grace, abort: abort, jobID: jobID}
}

// allowance is how long the bytes received so far may have taken.
func (m *minRateBody) allowance() time.Duration {
	return m.grace + time.Duration(float64(m.n)/float64(m.rate)*float64(time.Second))
}

func (m *minRateBody) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	left := m.allowance() - m.waited
	timer := time.AfterFunc(max(left, 0), func() {
		m.mu.Lock()
		m.tripped = true
		m.mu.Unlock()
		m.abort()
	})
	start := time.Now()
	n, err := m.body.Read(p)
	timer.Stop()
	m.waited += time.Since(start)
	m.n += int64(n)
	m.mu.Lock()
	tripped := m.tripped
	m.mu.Unlock()
	if tripped || m.waited > m.allowance() {
		m.abort()
		m.err = fmt.Errorf("%w: job %s: %d bytes in %s, under the %d bytes/s minimum (limits.download_min_rate)",
			ErrTooSlow, m.jobID, m.n, m.waited.Round(time.Second), m.rate)
		return n, m.err
	}
	if err != nil {
		m.err = err
	}
	return n, err
}

func (m *minRateBody) Close() error { return m.body.Close() }

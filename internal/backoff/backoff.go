// Package backoff computes the waits of retry loops: capped exponential
// growth and the jitter that keeps a fleet of printers from retrying in
// step. The numbers (first wait, cap, jitter fraction) stay with each
// caller; this package only does the arithmetic, once.
package backoff

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Exp is the wait before attempt (counted from 1): min·2^(attempt-1),
// capped at max. Attempt 1 waits min.
func Exp(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// Backoff counts the attempts of one retry loop.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next is the wait before the next attempt: Min, 2·Min, 4·Min … Max.
func (b *Backoff) Next() time.Duration {
	b.n++
	return Exp(b.Min, b.Max, b.n)
}

// Reset starts again from Min (after a success).
func (b *Backoff) Reset() { b.n = 0 }

// Spread maps u, uniform in [0,1), onto [(1-frac)·d, (1+frac)·d): a loop
// with an injected random source (tests pin it) uses it directly.
func Spread(d time.Duration, frac, u float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	return d + time.Duration((2*u-1)*frac*float64(d))
}

// Jitter spreads d by ±frac at random.
func Jitter(d time.Duration, frac float64) time.Duration {
	return Spread(d, frac, rand.Float64())
}

// Below draws from [(1-frac)·d, d]: spread, but never later than d (a
// retry whose promptness matters).
func Below(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	return d - time.Duration(rand.Float64()*frac*float64(d))
}

// ServerWaiter is implemented by an error that carries how long the
// server asked the caller to wait before trying again (HTTP Retry-After
// on 429/503); the marketplace client's HTTPError is one.
type ServerWaiter interface {
	ServerWait() (time.Duration, bool)
}

// AfterServerWait is the wait a retry loop keeps after err: its own wait,
// or, when err (anywhere in its chain) is a ServerWaiter that asked for
// longer, that plus up to 10 % (never earlier than asked, and a fleet told
// the same date does not come back in the same second).
func AfterServerWait(err error, wait time.Duration) time.Duration {
	var sw ServerWaiter
	if !errors.As(err, &sw) {
		return wait
	}
	asked, ok := sw.ServerWait()
	if !ok {
		return wait
	}
	return max(wait, Above(asked, 0.1))
}

// Above draws from [d, (1+frac)·d]: spread, but never sooner than d (a
// server's Retry-After: earlier is refused, and a fleet told the same date
// does not come back at the same instant).
func Above(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	return d + time.Duration(rand.Float64()*frac*float64(d))
}

package marketplace

import (
	"context"
	"math/rand/v2"
	"time"
)

// Clock is the client's view of time, replaceable in tests.
type Clock interface {
	Now() time.Time
	// After is time.After: the channel fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// sleep waits d on clock or until ctx ends.
func sleep(ctx context.Context, clock Clock, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-clock.After(d):
		return nil
	}
}

// backoff is capped exponential backoff: min, 2·min, 4·min … max.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.n++
	return d
}

func (b *backoff) reset() { b.n = 0 }

// jitter spreads d by ±frac so a fleet of printers does not call in step.
func jitter(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	span := float64(d) * frac
	return d + time.Duration((rand.Float64()*2-1)*span)
}

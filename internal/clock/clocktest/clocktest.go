// Package clocktest is a clock.Clock for tests that moves only when the
// test advances it, so hours of heartbeats and backoff run in microseconds
// and in a known order.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
)

// Start is where a new Fake's time begins.
var Start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Fake is a clock.Clock that moves only on Advance.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

// NewFake returns a Fake at Start.
func NewFake() *Fake { return &Fake{now: Start} }

type timer struct {
	clock *Fake
	at    time.Time
	c     chan time.Time
}

// Now is the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer arms a timer that fires when Advance reaches now+d; one of d ≤ 0
// has fired already.
func (c *Fake) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{clock: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *timer) C() <-chan time.Time { return t.c }

func (t *timer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock by d and fires every timer that is due, earliest
// first.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- t.at
	}
	c.timers = kept
}

// Pending is the number of armed timers.
func (c *Fake) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

package clock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/clock/clocktest"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func TestFakeFiresDueTimersInOrder(t *testing.T) {
	c := clocktest.NewFake()
	late, early := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	stopped := c.NewTimer(time.Second)
	if !stopped.Stop() || c.Pending() != 2 {
		t.Fatalf("after Stop: pending %d, want 2", c.Pending())
	}
	c.Advance(1500 * time.Millisecond)
	select {
	case at := <-early.C():
		if !at.Equal(clocktest.Start.Add(time.Second)) {
			t.Fatalf("early fired at %v", at)
		}
	default:
		t.Fatal("the due timer did not fire")
	}
	select {
	case <-late.C():
		t.Fatal("a timer fired before its time")
	default:
	}
	c.Advance(time.Second)
	<-late.C()
	if c.Pending() != 0 || !c.Now().Equal(clocktest.Start.Add(2500*time.Millisecond)) {
		t.Fatalf("pending %d, now %v", c.Pending(), c.Now())
	}
	if now := c.NewTimer(0); len(now.C()) != 1 {
		t.Fatal("a timer of 0 has not fired at once")
	}
}

func TestSleepOnFakeAndCancel(t *testing.T) {
	c := clocktest.NewFake()
	done := make(chan error, 1)
	go func() { done <- clock.Sleep(context.Background(), c, time.Minute) }()
	testutil.Eventually(t, 5*time.Second, "Sleep's timer", func() bool { return c.Pending() == 1 })
	c.Advance(time.Minute)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := clock.Sleep(ctx, clock.System{}, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

package marketplace_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// runPush runs the push stream and signals every put/patch on the channel.
func runPush(t *testing.T, c *marketplace.Client, o marketplace.PushOptions) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() { done <- c.RunPush(ctx, o, func() { events <- struct{}{} }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("RunPush ended with %v", err)
		}
	})
	return events
}

func waitEvent(t *testing.T, events <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-events:
	case <-time.After(within):
		t.Fatalf("no push event within %v: %s", within, what)
	}
}

// The push stream delivers a put on connect and one per queue change, and
// a push makes the poller fetch the new job at once (the poll interval is
// an hour here).
func TestPushTriggersPoll(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	p := e.client.NewPoller(marketplace.PollerOptions{Interval: time.Hour, MinInterval: 10 * time.Millisecond})
	jobs, _, _ := runPoller(t, p)
	events := runPush(t, e.client, marketplace.PushOptions{})
	waitEvent(t, events, 5*time.Second, "the put on connect")
	go func() {
		for range events {
			p.Trigger()
		}
	}()
	id := e.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	if j := receiveJob(t, jobs, 5*time.Second); j.ID != id {
		t.Fatalf("job %s", j.ID)
	}
	if auth := e.sim.StorageAuthorizations(); len(auth) != 0 {
		t.Fatal("the printer token was sent to the push host")
	}
}

// A stream that goes silent is dropped after the read timeout and
// reconnected; the fresh stream's put arrives.
func TestPushSilentStreamReconnects(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Silent: true, Count: 1})
	const readTimeout = 300 * time.Millisecond
	start := time.Now()
	events := runPush(t, e.client, marketplace.PushOptions{ReadTimeout: readTimeout, RetryMin: 10 * time.Millisecond})
	waitEvent(t, events, readTimeout+2*time.Second, "the put after reconnecting")
	el := time.Since(start)
	if el < readTimeout {
		t.Fatalf("event after %v, before the read timeout: the silent stream was not the first", el)
	}
	if n := e.sim.PushConnections(e.printerID()); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// Keep-alives hold a quiet stream open past the read timeout.
func TestPushKeepAliveHoldsStream(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, &marketsim.Options{KeepAlive: 50 * time.Millisecond}, nil)
	e.pair()
	events := runPush(t, e.client, marketplace.PushOptions{ReadTimeout: 200 * time.Millisecond})
	waitEvent(t, events, 5*time.Second, "the put on connect")
	time.Sleep(600 * time.Millisecond) // three read timeouts of keep-alives only
	if n := e.sim.PushConnections(e.printerID()); n != 1 {
		t.Fatalf("%d connections: keep-alives did not keep the stream", n)
	}
}

// Dropped streams and server errors reconnect with backoff; healthy
// streams are recycled after MaxStreamAge.
func TestPushDroppedAndRecycled(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Drop: true, Count: 1})
	events := runPush(t, e.client, marketplace.PushOptions{MaxStreamAge: 150 * time.Millisecond, RetryMin: 10 * time.Millisecond})
	for i := 0; i < 3; i++ { // dropped, then two recycled connections: a put each
		waitEvent(t, events, 5*time.Second, "a put")
	}
	if n := e.sim.PushConnections(e.printerID()); n < 3 {
		t.Fatalf("%d connections", n)
	}
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Status: 503, Count: 2})
	before := e.sim.Calls(marketsim.CallPush)
	waitEvent(t, events, 5*time.Second, "a put after two 503s")
	if n := e.sim.Calls(marketsim.CallPush) - before; n < 2 {
		t.Fatalf("%d attempts", n)
	}
}

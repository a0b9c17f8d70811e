package marketplace_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// runPush runs the push stream; changes gets every onChange call, connects
// every time the stream comes up.
func runPush(t *testing.T, c *marketplace.Client, o marketplace.PushOptions) (changes, connects <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, up := make(chan struct{}, 100), make(chan struct{}, 100)
	o.OnHealth = func(ok bool) {
		if ok {
			up <- struct{}{}
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.RunPush(ctx, o, func() { ch <- struct{}{} }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("RunPush ended with %v", err)
		}
	})
	return ch, up
}

func waitEvent(t *testing.T, events <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-events:
	case <-time.After(within):
		t.Fatalf("no push event within %v: %s", within, what)
	}
}

func noEvent(t *testing.T, events <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-events:
		t.Fatalf("unexpected push change: %s", what)
	case <-time.After(within):
	}
}

// The push stream reports a queue change at once, and a push makes the
// poller fetch the new job at once (the poll interval is an hour here).
func TestPushTriggersPoll(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	p := e.client.NewPoller(marketplace.PollerOptions{Interval: time.Hour, MinInterval: 10 * time.Millisecond, Rand: func() float64 { return 0.5 }})
	jobs, _, _ := runPoller(t, p)
	changes, connects := runPush(t, e.client, marketplace.PushOptions{})
	waitEvent(t, connects, 5*time.Second, "the stream connecting")
	go func() {
		for range changes {
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

// The put that opens a connection costs no poll when the queue is what the
// printer saw last (empty on the first connection); a job that arrived
// while the stream was down does.
func TestPushReconnectCostsNoPollWhenNothingChanged(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	changes, connects := runPush(t, e.client, marketplace.PushOptions{MaxStreamAge: 200 * time.Millisecond})
	waitEvent(t, connects, 5*time.Second, "the first connection")
	noEvent(t, changes, 100*time.Millisecond, "an empty queue on connect")
	e.createJob([]byte("G28\n"), marketsim.DownloadGCS)
	waitEvent(t, changes, 5*time.Second, "the new job")
	waitEvent(t, connects, 5*time.Second, "the recycled connection")
	noEvent(t, changes, 100*time.Millisecond, "the same queue after reconnecting")

	// A job that arrives while no stream is open is news on the next put.
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Status: 503, Count: 1})
	waitEvent(t, connects, 5*time.Second, "the next recycled connection")
	e.createJob([]byte("G1 X1\n"), marketsim.DownloadGCS)
	waitEvent(t, changes, 5*time.Second, "the second job")
}

// A stream that sends its first put and closes keeps backing off: the
// backoff restarts only after a stream stayed up StableAfter.
func TestPushFlappingBacksOff(t *testing.T) {
	clock := &scaledClock{scale: 1000}
	e := newEnv(t, marketplace.ProfileCurrent, nil, func(o *marketplace.Options) { o.Clock = clock })
	e.pair()
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Drop: true})
	_, connects := runPush(t, e.client, marketplace.PushOptions{RetryMax: 64 * time.Second})
	for i := 0; i < 6; i++ {
		waitEvent(t, connects, 5*time.Second, "a flapping connection")
	}
	waits := clock.recorded()
	want := []time.Duration{1, 2, 4, 8, 16}
	if len(waits) < len(want) {
		t.Fatalf("waits %v", waits)
	}
	for i, w := range want {
		if d := waits[i]; d < w*time.Second*8/10 || d > w*time.Second*12/10 {
			t.Fatalf("reconnect %d waited %v, want ≈%ds (all %v): the backoff restarted after a short stream", i, d, w, waits)
		}
	}
}

// A stream that goes silent is dropped after the read timeout and
// reconnected.
func TestPushSilentStreamReconnects(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, nil, nil)
	e.pair()
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Silent: true, Count: 1})
	const readTimeout = 300 * time.Millisecond
	start := time.Now()
	_, connects := runPush(t, e.client, marketplace.PushOptions{ReadTimeout: readTimeout, RetryMin: 10 * time.Millisecond})
	waitEvent(t, connects, readTimeout+2*time.Second, "the put after reconnecting")
	el := time.Since(start)
	if el < readTimeout {
		t.Fatalf("connected after %v, before the read timeout: the silent stream was not the first", el)
	}
	if n := e.sim.PushConnections(e.printerID()); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// Keep-alives hold a quiet stream open past the read timeout.
func TestPushKeepAliveHoldsStream(t *testing.T) {
	e := newEnv(t, marketplace.ProfileCurrent, &marketsim.Options{KeepAlive: 50 * time.Millisecond}, nil)
	e.pair()
	_, connects := runPush(t, e.client, marketplace.PushOptions{ReadTimeout: 200 * time.Millisecond})
	waitEvent(t, connects, 5*time.Second, "the put on connect")
	// Twelve keep-alives are three read timeouts of keep-alives only; a
	// stream the client dropped would take no more of them.
	testutil.Eventually(t, 5*time.Second, "twelve keep-alives", func() bool { return e.sim.PushKeepAlives(e.printerID()) >= 12 })
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
	_, connects := runPush(t, e.client, marketplace.PushOptions{MaxStreamAge: 150 * time.Millisecond, RetryMin: 10 * time.Millisecond})
	for i := 0; i < 3; i++ { // dropped, then two recycled connections
		waitEvent(t, connects, 5*time.Second, "a connection")
	}
	if n := e.sim.PushConnections(e.printerID()); n < 3 {
		t.Fatalf("%d connections", n)
	}
	e.sim.SetFault(marketsim.CallPush, marketsim.Fault{Status: 503, Count: 2})
	before := e.sim.Calls(marketsim.CallPush)
	for len(connects) > 0 {
		<-connects
	}
	waitEvent(t, connects, 5*time.Second, "a connection after two 503s")
	if n := e.sim.Calls(marketsim.CallPush) - before; n < 2 {
		t.Fatalf("%d attempts", n)
	}
}

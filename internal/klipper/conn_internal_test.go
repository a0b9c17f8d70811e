package klipper

import (
	"context"
	"errors"
	"testing"
)

// A request answered just before the connection closed (or the deadline
// passed) is answered: select chooses at random among ready cases, so a
// waiter that runs late must still find the answer first. The harness's
// cancel of an unknown job failed in CI as "disconnected" this way.
func TestWaitPrefersAnAnswerThatAlreadyArrived(t *testing.T) {
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 200 {
		// Even tries: the connection closed; odd tries: the deadline passed.
		c := &conn{pending: map[string]*pendingRequest{}, done: make(chan struct{})}
		ctx := context.Background()
		if i%2 == 0 {
			close(c.done)
		} else {
			ctx = expired
		}
		p := c.register("id", TypeCancel, "j1", "")
		c.answerPending("id", answer{message: "no print of job j1 is running"})
		if err := c.wait(ctx, p); !errors.Is(err, ErrRejected) {
			t.Fatalf("try %d: wait = %v, want the extra's refusal", i, err)
		}
		q := c.register("ok", TypeCancel, "j1", "")
		c.answerPending("ok", answer{ok: true})
		if err := c.wait(ctx, q); err != nil {
			t.Fatalf("try %d: wait = %v, want the acceptance", i, err)
		}
	}
	c := &conn{pending: map[string]*pendingRequest{}, done: make(chan struct{})}
	close(c.done)
	if err := c.wait(context.Background(), c.register("x", TypePing, "", "")); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("unanswered wait on a closed connection = %v", err)
	}
}

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
		c := &conn{pending: map[string]*pendingRequest{}, done: make(chan struct{})}
		close(c.done)
		p := c.register("id", TypeCancel, "j1", "")
		c.answerPending("id", answer{message: "no print of job j1 is running"})
		ctx := context.Background()
		if i%2 == 1 {
			ctx = expired
		}
		err := c.wait(ctx, p)
		if !errors.Is(err, ErrRejected) {
			t.Fatalf("try %d: wait = %v, want the extra's refusal", i, err)
		}

		q := c.register("ok", TypeCancel, "j1", "")
		c.answerPending("ok", answer{ok: true})
		if err := c.wait(ctx, q); err != nil {
			t.Fatalf("try %d: wait = %v, want the acceptance", i, err)
		}
	}
	p := (&conn{pending: map[string]*pendingRequest{}, done: make(chan struct{})}).register("x", TypePing, "", "")
	c := &conn{done: make(chan struct{})}
	close(c.done)
	if err := c.wait(context.Background(), p); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("unanswered wait on a closed connection = %v", err)
	}
}

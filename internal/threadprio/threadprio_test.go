package threadprio

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// A goroutine started with Go from a lowered thread runs at that thread's
// priority, on a thread of its own.
func TestGoKeepsTheCallersPriority(t *testing.T) {
	want := Priority{Nice: 7, IOPrio: IOPrioBestEffortLowest}
	type result struct {
		caller, child Priority
		callerTid     int
		childTid      int
		err           error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread is lowered
		var r result
		r.callerTid = unix.Gettid()
		if err := SetNice(want.Nice); err != nil {
			r.err = err
		} else if err := SetIOPrio(want.IOPrio); err != nil {
			r.err = err
		}
		r.caller, _ = Of(r.callerTid)
		child := make(chan struct{})
		Go(func() {
			r.childTid = unix.Gettid()
			r.child, _ = Of(r.childTid)
			close(child)
		})
		<-child
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.caller != want || r.child != want {
		t.Fatalf("caller %+v, goroutine %+v, want both %+v", r.caller, r.child, want)
	}
	if r.childTid == r.callerTid {
		t.Fatal("the goroutine ran on the caller's thread")
	}
}

// At the process's own priority, Go starts an ordinary goroutine: it may
// share the caller's thread and is not locked to one.
func TestGoAtTheProcessPriority(t *testing.T) {
	done := make(chan Priority, 1)
	Go(func() {
		p, _ := Of(unix.Gettid())
		done <- p
	})
	if p := <-done; p != initial {
		t.Fatalf("goroutine at %+v, want the process's %+v", p, initial)
	}
}

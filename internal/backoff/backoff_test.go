package backoff

import (
	"slices"
	"testing"
	"time"
)

func TestExpDoublesUpToTheCap(t *testing.T) {
	const min, max = 5 * time.Second, 5 * time.Minute
	for attempt := 1; attempt <= 20; attempt++ {
		want := min << (attempt - 1)
		if attempt > 7 || want > max {
			want = max
		}
		if got := Exp(min, max, attempt); got != want {
			t.Fatalf("attempt %d: %v, want %v", attempt, got, want)
		}
	}
	if got := Exp(time.Second, 500*time.Millisecond, 1); got != 500*time.Millisecond {
		t.Fatalf("a cap below the first wait: %v, want the cap", got)
	}
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != time.Second {
		t.Fatalf("after Reset: %v, want 1s", d)
	}
	// A cap that is not a power-of-two multiple of Min.
	b = Backoff{Min: 5, Max: 300}
	got = got[:0]
	for range 8 {
		got = append(got, b.Next())
	}
	if want := []time.Duration{5, 10, 20, 40, 80, 160, 300, 300}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

func TestJitterBounds(t *testing.T) {
	const d = 10 * time.Second
	if Spread(d, 0.2, 0) != 8*time.Second || Spread(d, 0.2, 0.5) != d || Spread(d, 0, 0.9) != d {
		t.Fatal("Spread does not map [0,1) onto [(1-frac)d, (1+frac)d)")
	}
	for range 1000 {
		if j := Jitter(d, 0.2); j < 8*time.Second || j > 12*time.Second {
			t.Fatalf("Jitter(10s, 0.2) = %v", j)
		}
		if b := Below(d, 0.5); b < 5*time.Second || b > d {
			t.Fatalf("Below(10s, 0.5) = %v", b)
		}
		if a := Above(d, 0.1); a < d || a > 11*time.Second {
			t.Fatalf("Above(10s, 0.1) = %v", a)
		}
	}
}

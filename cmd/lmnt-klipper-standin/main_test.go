package main

import "testing"

func TestParseSpeed(t *testing.T) {
	for in, want := range map[string]int64{"instant": 0, "0": 0, " Instant ": 0, "50000": 50000, "200k": 200000, "2M": 2000000} {
		if got, err := parseSpeed(in); err != nil || got != want {
			t.Errorf("parseSpeed(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-5", "1.5k", "k"} {
		if _, err := parseSpeed(bad); err == nil {
			t.Errorf("parseSpeed(%q) accepted", bad)
		}
	}
}

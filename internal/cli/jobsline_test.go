package cli

import (
	"strings"
	"testing"
)

func TestJobsLineShowsTheBedOnlyWhenItMatters(t *testing.T) {
	printing := &jobInfo{ID: "j1", State: "printing", Progress: 0.42}
	for _, c := range []struct {
		s        jobsSnapshot
		want     []string
		wantNone []string
	}{
		{jobsSnapshot{Active: printing, BedClear: true}, []string{"j1: printing  42%"}, []string{"bed"}},
		{jobsSnapshot{Active: &jobInfo{ID: "j1", State: "paused"}}, []string{"paused"}, []string{"bed"}},
		{jobsSnapshot{Active: &jobInfo{ID: "j1", State: "printing", ProgressUnknown: true}}, []string{"progress unknown: Klipper not connected"}, []string{"0%"}},
		{jobsSnapshot{BedClear: true}, []string{"none active", "bed confirmed clear"}, nil},
		{jobsSnapshot{}, []string{"bed not confirmed clear"}, nil},
		{jobsSnapshot{AutoStart: true}, nil, []string{"bed"}},
	} {
		line := jobsLine(c.s)
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%q lacks %q", line, w)
			}
		}
		for _, w := range c.wantNone {
			if strings.Contains(line, w) {
				t.Errorf("%q has %q", line, w)
			}
		}
	}
}

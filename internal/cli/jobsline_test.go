package cli

import (
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"strings"
	"testing"
)

func TestJobsLineShowsTheBedOnlyWhenItMatters(t *testing.T) {
	printing := &apitype.JobInfo{ID: "j1", State: "printing", Progress: 0.42}
	for _, c := range []struct {
		s        apitype.Snapshot
		want     []string
		wantNone []string
	}{
		{apitype.Snapshot{Active: printing, BedClear: true}, []string{"j1: printing  42%"}, []string{"bed"}},
		{apitype.Snapshot{Active: &apitype.JobInfo{ID: "j1", State: "paused"}}, []string{"paused"}, []string{"bed"}},
		{apitype.Snapshot{Active: &apitype.JobInfo{ID: "j1", State: "printing", ProgressUnknown: true}}, []string{"progress unknown: Klipper not connected"}, []string{"0%"}},
		{apitype.Snapshot{BedClear: true}, []string{"none active", "bed confirmed clear"}, nil},
		{apitype.Snapshot{}, []string{"bed not confirmed clear"}, nil},
		{apitype.Snapshot{AutoStart: true}, nil, []string{"bed"}},
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

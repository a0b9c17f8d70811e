package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

// followEvery is how often lmnt print --follow and status --watch ask.
const followEvery = 500 * time.Millisecond

// stateWords says what a job is doing in an owner's words. A local job is
// read from the owner's upload: it is never "downloaded".
func stateWords(j apitype.JobInfo) string {
	switch j.State {
	case apitype.JobAccepted:
		return "queued"
	case apitype.JobDownloading:
		if j.Local {
			return "checking the file"
		}
		return "downloading and decrypting"
	case apitype.JobReady:
		return "starting the print"
	case apitype.JobPrinting, apitype.JobPaused:
		if j.ProgressUnknown {
			return fmt.Sprintf("%s (progress unknown: Klipper not connected)", j.State)
		}
		return fmt.Sprintf("%s %3.0f%%", j.State, j.Progress*100)
	}
	return string(j.State)
}

// jobTitle is the job's name when it has one, else its id.
func jobTitle(j apitype.JobInfo) string {
	if j.Name != "" {
		return j.Name
	}
	return j.ID
}

// progressBar draws width cells for a fraction 0..1.
func progressBar(frac float64, width int) string {
	n := int(frac*float64(width) + 0.5)
	n = min(max(n, 0), width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// followJob shows job id's progress until it ends: on a terminal one line
// redrawn in place, otherwise a line per change (and per 10 % printed).
// The exit status is 0 when the print succeeded, 1 otherwise.
func (e *env) followJob(ctx context.Context, id string) (int, error) {
	tty := false
	if f, ok := e.stdout.(*os.File); ok {
		tty = isTerminal(f)
	}
	last := ""
	for {
		var s apitype.Snapshot
		if err := e.c.Get(ctx, "/lmnt/v1/jobs", &s); err != nil {
			if tty {
				fmt.Fprintln(e.stdout)
			}
			return 1, err
		}
		j, where := findJob(s, id)
		switch {
		case where == "":
			return 1, fmt.Errorf("job %s is no longer known to lmntd", id)
		case where == "finished":
			if tty {
				fmt.Fprint(e.stdout, "\r\033[K")
			}
			fmt.Fprintf(e.stdout, "%s: %s", jobTitle(j), j.State)
			if j.Message != "" {
				fmt.Fprintf(e.stdout, ": %s", j.Message)
			}
			fmt.Fprintln(e.stdout)
			if j.State == apitype.JobSucceeded {
				return 0, nil
			}
			return 1, nil
		}
		line := stateWords(j)
		if where == "queued" && s.Waiting != "" {
			line += ": " + s.Waiting
		}
		if tty {
			bar := ""
			if j.State == apitype.JobPrinting || j.State == apitype.JobPaused {
				bar = " " + progressBar(j.Progress, 20)
			}
			fmt.Fprint(e.stdout, "\r\033[K"+trunc(jobTitle(j)+": "+line+bar, 79))
		} else {
			// One line per 10 % while printing, not per percent.
			key := line
			if j.State == apitype.JobPrinting || j.State == apitype.JobPaused {
				key = fmt.Sprintf("%s %d", j.State, int(j.Progress*10))
				line = fmt.Sprintf("%s %d%%", j.State, int(j.Progress*10)*10)
			}
			if key != last {
				fmt.Fprintf(e.stdout, "%s: %s\n", jobTitle(j), line)
				last = key
			}
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(e.stdout)
			}
			return 1, errInterrupted
		case <-time.After(followEvery):
		}
	}
}

// errInterrupted ends a follow on Ctrl-C; the job itself goes on.
var errInterrupted = fmt.Errorf("stopped following; the job goes on (lmnt jobs shows it)")

func findJob(s apitype.Snapshot, id string) (apitype.JobInfo, string) {
	if s.Active != nil && s.Active.ID == id {
		return *s.Active, "active"
	}
	for _, j := range s.Queue {
		if j.ID == id {
			return j, "queued"
		}
	}
	for _, j := range s.Finished {
		if j.ID == id {
			return j, "finished"
		}
	}
	return apitype.JobInfo{}, ""
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

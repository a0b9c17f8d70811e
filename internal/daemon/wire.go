package daemon

import (
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
)

// The job engine keeps its own types; the API speaks apitype's. These
// convert at the boundary (wire_test.go fails when a field or a state is
// added on one side only).

// wireState is a job state's word on the API: the engine's states and
// apitype's are the same words (wire_test.go checks both lists).
func wireState(s jobs.State) apitype.JobState { return apitype.JobState(s) }

func wireJob(j jobs.JobInfo) apitype.JobInfo {
	return apitype.JobInfo{ID: j.ID, Name: j.Name, Local: j.Local, State: wireState(j.State), Message: j.Message,
		Progress: j.Progress, Created: j.Created, Updated: j.Updated, PendingReports: j.PendingReports,
		ProgressUnknown: j.ProgressUnknown}
}

func wireJobs(js []jobs.JobInfo) []apitype.JobInfo {
	if js == nil {
		return nil
	}
	out := make([]apitype.JobInfo, len(js))
	for i, j := range js {
		out[i] = wireJob(j)
	}
	return out
}

// wireSnapshot is the engine's snapshot as the API sends it.
func wireSnapshot(s jobs.Snapshot) apitype.Snapshot {
	w := apitype.Snapshot{Queue: wireJobs(s.Queue), Finished: wireJobs(s.Finished), Waiting: s.Waiting,
		BedClear: s.BedClear, AutoStart: s.AutoStart, JournalProblem: s.JournalProblem}
	if s.Active != nil {
		a := wireJob(*s.Active)
		w.Active = &a
	}
	return w
}

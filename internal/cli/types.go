package cli

import "github.com/lmnt-marketplace/lmntd/internal/jobs"

// The engine's JSON types, as the API sends them.
type (
	jobsSnapshot = jobs.Snapshot
	jobInfo      = jobs.JobInfo
)

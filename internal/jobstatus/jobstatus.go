// Package jobstatus holds the words of the marketplace's job-status call
// (POST /api/print-jobs/{id}/status, ../spec/marketplace-api.md): the one
// list the engine reports with, the client sends and the simulator checks
// against. It is a leaf, so the simulator can check what the contract allows
// without importing the client it tests.
package jobstatus

// The status values the contract allows.
const (
	Processing = "processing" // accepted, downloading or preparing
	Printing   = "printing"
	Paused     = "paused"
	Success    = "success" // final
	Failure    = "failure" // final, with the reason in the message
)

// All lists every value the contract allows, in the order a job goes
// through them.
func All() []string { return []string{Processing, Printing, Paused, Success, Failure} }

// Final reports whether status ends the job: the marketplace takes it off
// the printer's queue.
func Final(status string) bool { return status == Success || status == Failure }

package jobstatus

import (
	"slices"
	"testing"
)

// The words are the contract's (marketplace-api.md, "Job status values
// sent"); a change here is a change of the wire format.
func TestTheContractsWords(t *testing.T) {
	if want := []string{"processing", "printing", "paused", "success", "failure"}; !slices.Equal(All(), want) {
		t.Fatalf("All() = %v, want %v", All(), want)
	}
	for _, s := range All() {
		if Final(s) != (s == "success" || s == "failure") {
			t.Errorf("Final(%q) = %v", s, Final(s))
		}
	}
	if Final("cancelled") {
		t.Error(`Final("cancelled") = true for a word outside the contract`)
	}
}

package jobs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
)

func TestIndexRepairsAndIgnoresTornLines(t *testing.T) {
	dir := t.TempDir()
	s, _, err := openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*record{
		{ID: "job-1", State: Accepted},
		{ID: "job-2", State: Succeeded},
		{ID: "job-3", State: Failed, Pending: []pendingReport{{Seq: 1, Report: Report{Status: jobstatus.Failure}}}},
	} {
		if err := s.save(r); err != nil {
			t.Fatal(err)
		}
	}
	idx := filepath.Join(dir, "jobs", indexFile)
	// A torn append (a crash mid-write) and a line from outside damage.
	f, err := os.OpenFile(idx, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("bad/id accepted\njob-9 acc"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A record written just before a crash, without its index line.
	if err := os.WriteFile(filepath.Join(dir, "jobs", "job-4.json"), []byte(`{"id":"job-4","state":"accepted"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, err = openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"job-1": false, "job-2": true, "job-3": false, "job-4": false}
	if len(s.idx.done) != len(want) {
		t.Fatalf("index %v, want %v", s.idx.done, want)
	}
	for id, done := range want {
		if got, ok := s.idx.done[id]; !ok || got != done {
			t.Errorf("index[%s] = %v, %v; want %v", id, got, ok, done)
		}
	}
	data, _ := os.ReadFile(idx)
	if got := string(data); got != "job-1 accepted\njob-2 done\njob-3 accepted\njob-4 accepted\n" {
		t.Errorf("compacted index:\n%s", got)
	}
	// job-3's report delivered: the index says it is done.
	if err := s.save(&record{ID: "job-3", State: Failed}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(idx); !strings.HasSuffix(string(data), "job-3 done\n") {
		t.Errorf("index after job-3 finished:\n%s", data)
	}
}

// TestUnreadableIndexDoesNotStopStart: an index lmntd cannot read is set
// aside and rebuilt from the records.
func TestUnreadableIndexDoesNotStopStart(t *testing.T) {
	dir := t.TempDir()
	s, _, err := openStore(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.save(&record{ID: "job-1", State: Succeeded}); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(dir, "jobs", indexFile)
	// Unreadable: for root, whom modes do not stop, a directory.
	if err := os.Remove(idx); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(idx, 0o700); err != nil {
		t.Fatal(err)
	}
	s, _, err = openStore(dir, discardLogger())
	if err != nil {
		t.Fatalf("an unreadable index stopped the start: %v", err)
	}
	if !s.idx.done["job-1"] {
		t.Fatalf("index not rebuilt: %v", s.idx.done)
	}
	if data, err := os.ReadFile(idx); err != nil || string(data) != "job-1 done\n" {
		t.Fatalf("rebuilt index: %q, %v", data, err)
	}
}

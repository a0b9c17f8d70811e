package api

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobs"
)

// TestUIStateCards: each daemon state gets its one card, with only the
// actions that make sense there (the bed button only in the bed card).
func TestUIStateCards(t *testing.T) {
	s := New(Options{})
	exp := time.Now().Add(5 * time.Minute)
	paired := Status{Auth: AuthStatus{Authenticated: true}, Printer: PrinterStatus{Name: "MK4"},
		Jobs: jobs.Snapshot{BedClear: true}, Klipper: KlipperStatus{Connected: true, Klippy: "ready"}}
	with := func(f func(*Status)) Status {
		st := paired
		st.Jobs.Finished, st.Jobs.Queue = nil, nil
		f(&st)
		return st
	}
	printing := jobs.JobInfo{ID: "job-1", Name: "benchy.gcode", State: jobs.Printing, Progress: 0.5}
	for _, c := range []struct {
		name    string
		st      Status
		p       Pairing
		card    string
		actions []string
		words   string
	}{
		{"fresh", Status{}, Pairing{Status: "not_started"}, cardUnpaired, []string{"pair"}, "Not paired yet"},
		{"code", Status{}, Pairing{Status: "pending", PairingCode: "ABC123", ExpiresAt: &exp, PrinterName: "MK4"}, cardCode, nil, "Enter this code"},
		{"expired", Status{}, Pairing{Status: "expired"}, cardUnpaired, []string{"pair"}, "expired"},
		{"lost", Status{Auth: AuthStatus{PairingLost: true}, Printer: PrinterStatus{Name: "MK4"}}, Pairing{}, cardUnpaired, []string{"pair"}, "Pairing lost"},
		{"klipper", with(func(s *Status) { s.Klipper.Problem, s.Klipper.NextStep = "Klipper is shut down: x", "FIRMWARE_RESTART" }), Pairing{}, cardKlipper, nil, "Klipper is shut down"},
		{"preparing", with(func(s *Status) { s.Jobs.Active = &jobs.JobInfo{ID: "job-1", State: jobs.Downloading} }), Pairing{}, cardPreparing, nil, "Getting the print ready"},
		{"printing", with(func(s *Status) { s.Jobs.Active = &printing; s.Klipper.PrintDuration = 600 }), Pairing{}, cardPrinting, nil, "Printing"},
		{"bed", with(func(s *Status) { s.Jobs.BedClear = false }), Pairing{}, cardBed, []string{"ready"}, "Is the bed clear?"},
		{"failed", with(func(s *Status) {
			s.Jobs.Finished = []jobs.JobInfo{{ID: "job-2", State: jobs.Failed, Message: "The file failed verification (ref 0123456789ab)"}}
		}), Pairing{}, cardFailed, nil, "never reached Klipper"},
		{"idle", paired, Pairing{}, cardIdle, nil, "Ready for the next print"},
		{"auto start never asks for the bed", with(func(s *Status) { s.Jobs.BedClear, s.Jobs.AutoStart = false, true }), Pairing{}, cardIdle, nil, "Ready"},
	} {
		u := s.uiState(c.st, c.p)
		if u.Card != c.card || !slices.Equal(u.Actions, c.actions) {
			t.Errorf("%s: card %q actions %v, want %q %v", c.name, u.Card, u.Actions, c.card, c.actions)
		}
		if all := u.Headline + " " + u.Detail + " " + u.NextStep; !strings.Contains(all, c.words) {
			t.Errorf("%s: %q lacks %q", c.name, all, c.words)
		}
		if strings.Contains(u.Detail, "byte offset") || strings.Contains(u.Detail, "gcode rejected") {
			t.Errorf("%s: gate details on the page: %q", c.name, u.Detail)
		}
	}
	// Printing: the title without .gcode, remaining time from the progress.
	u := s.uiState(with(func(s *Status) { s.Jobs.Active = &printing; s.Klipper.PrintDuration = 600 }), Pairing{})
	if u.Job == nil || u.Job.Title != "benchy" || u.Job.Elapsed != 600 || u.Job.Remaining != 600 {
		t.Errorf("printing job: %+v", u.Job)
	}
}

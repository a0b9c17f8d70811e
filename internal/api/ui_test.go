package api

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

// TestUIStateCards: each daemon state gets its one card, with only the
// actions that make sense there (the bed button only in the bed card).
func TestUIStateCards(t *testing.T) {
	s := New(Options{})
	exp := time.Now().Add(5 * time.Minute)
	paired := apitype.Status{Auth: apitype.AuthStatus{Authenticated: true}, Printer: apitype.PrinterStatus{Name: "MK4"},
		Jobs: apitype.Snapshot{BedClear: true}, Klipper: apitype.KlipperStatus{Connected: true, Klippy: "ready"}}
	with := func(f func(*apitype.Status)) apitype.Status {
		st := paired
		st.Jobs.Finished, st.Jobs.Queue = nil, nil
		f(&st)
		return st
	}
	printing := apitype.JobInfo{ID: "job-1", Name: "benchy.gcode", State: apitype.JobPrinting, Progress: 0.5}
	for _, c := range []struct {
		name    string
		st      apitype.Status
		p       apitype.Pairing
		card    string
		actions []string
		words   string
	}{
		{"fresh", apitype.Status{}, apitype.Pairing{Status: "not_started"}, cardUnpaired, []string{"pair"}, "Not paired yet"},
		{"code", apitype.Status{}, apitype.Pairing{Status: "pending", PairingCode: "ABC123", ExpiresAt: &exp, PrinterName: "MK4"}, cardCode, nil, "Enter this code"},
		{"expired", apitype.Status{}, apitype.Pairing{Status: "expired"}, cardUnpaired, []string{"pair"}, "expired"},
		{"lost", apitype.Status{Auth: apitype.AuthStatus{PairingLost: true}, Printer: apitype.PrinterStatus{Name: "MK4"}}, apitype.Pairing{}, cardUnpaired, []string{"pair"}, "Pairing lost"},
		{"klipper", with(func(s *apitype.Status) {
			s.Klipper.Problem, s.Klipper.NextStep = "Klipper is shut down: x", "FIRMWARE_RESTART"
		}), apitype.Pairing{}, cardKlipper, nil, "Klipper is shut down"},
		{"preparing", with(func(s *apitype.Status) { s.Jobs.Active = &apitype.JobInfo{ID: "job-1", State: apitype.JobDownloading} }), apitype.Pairing{}, cardPreparing, nil, "Getting the print ready"},
		{"printing", with(func(s *apitype.Status) { s.Jobs.Active = &printing; s.Klipper.PrintDuration = 600 }), apitype.Pairing{}, cardPrinting, nil, "Printing"},
		{"bed", with(func(s *apitype.Status) { s.Jobs.BedClear = false }), apitype.Pairing{}, cardBed, []string{"ready"}, "Is the bed clear?"},
		{"failed", with(func(s *apitype.Status) {
			s.Jobs.Finished = []apitype.JobInfo{{ID: "job-2", State: apitype.JobFailed, Message: "The file failed verification (ref 0123456789ab)"}}
		}), apitype.Pairing{}, cardFailed, nil, "never reached Klipper"},
		{"idle", paired, apitype.Pairing{}, cardIdle, nil, "Ready for the next print"},
		{"auto start never asks for the bed", with(func(s *apitype.Status) { s.Jobs.BedClear, s.Jobs.AutoStart = false, true }), apitype.Pairing{}, cardIdle, nil, "Ready"},
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
	u := s.uiState(with(func(s *apitype.Status) { s.Jobs.Active = &printing; s.Klipper.PrintDuration = 600 }), apitype.Pairing{})
	if u.Job == nil || u.Job.Title != "benchy" || u.Job.Elapsed != 600 || u.Job.Remaining != 600 {
		t.Errorf("printing job: %+v", u.Job)
	}
}

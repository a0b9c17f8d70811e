package klipper_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
)

func TestWelcomeCarriesIdleHeartbeatAndStateFollows(t *testing.T) {
	ts := startServer(t, klipper.Options{})
	ts.srv.SetDaemonState(klipper.DaemonState{PairingCode: "K7Q-2M9", Job: &klipper.StateJob{ID: "j1", Title: "Benchy", State: "accepted"}})
	r := dialRaw(t, ts.socket)
	r.send(helloPacket())
	w := r.expect("welcome", "")
	if w["status_interval"] != float64(5) || w["idle_status_interval"] != float64(60) {
		t.Fatalf("welcome = %v", w)
	}
	st := r.expect("state", "")
	if st["pairing_code"] != "K7Q-2M9" || st["job"].(map[string]any)["title"] != "Benchy" {
		t.Fatalf("state = %v", st)
	}
	r.send(map[string]any{"v": 1, "type": "status", "klippy": map[string]any{"state": "ready"},
		"print_stats": map[string]any{"state": "standby"}})
	waitState(t, ts.srv, "connected", connectedWithStatus)

	// A change goes out at once; the same state again does not.
	ts.srv.SetDaemonState(klipper.DaemonState{WaitingForReady: true, Job: &klipper.StateJob{ID: "j1", Title: "Benchy", State: "accepted"}})
	ts.srv.SetDaemonState(klipper.DaemonState{WaitingForReady: true, Job: &klipper.StateJob{ID: "j1", Title: "Benchy", State: "accepted"}})
	ts.srv.Console("barrier")
	st = r.expect("state", "")
	if st["waiting_for_ready"] != true || st["pairing_code"] != nil {
		t.Fatalf("state = %v", st)
	}
	r.expect("console", "")
}

func TestValidateFilename(t *testing.T) {
	for _, ok := range []string{".lmnt/Benchy.gcode", ".lmnt/Dragon (2).gcode", ".lmnt/龍 vase.gcode"} {
		if err := klipper.ValidateFilename(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"Benchy.gcode", ".lmnt/../printer.cfg", ".lmnt/a/b.gcode", ".lmnt/.hidden.gcode",
		".lmnt/x.txt", ".lmnt/a\nb.gcode", ".lmnt/" + strings.Repeat("a", 200) + ".gcode", ".lmnt/\xff.gcode", ".lmnt/.gcode"} {
		if err := klipper.ValidateFilename(bad); !errors.Is(err, klipper.ErrInvalidName) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

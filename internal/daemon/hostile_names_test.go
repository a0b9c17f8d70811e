package daemon_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// hostileName hides its real extension behind a right-to-left override,
// clears the terminal and forges a log line.
const hostileName = "Benchy\u202Eedoc.gcode\x1b[2J\x1b]0;pwned\x07\nlevel=ERROR msg=forged\u2066x\u2069"

// TestHostileNamesCleaned: names a local caller gives (printer name, file
// name) lose their control and bidi characters before lmntd stores them,
// shows them, or sends them to the marketplace.
func TestHostileNamesCleaned(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{NoStandin: true})
	clean := func(what, s string) {
		t.Helper()
		for _, bad := range []string{"\u202E", "\x1b", "\x07", "\n", "\u2066", "\u2069"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s %q still holds %q", what, s, bad)
			}
		}
		if !strings.Contains(s, "Benchy") || !strings.Contains(s, "level=ERROR msg=forged") {
			t.Errorf("%s %q lost the visible text", what, s)
		}
	}

	r := d.Call("POST", "/machine/lmnt_marketplace/pair/start", map[string]string{"printer_name": hostileName})
	var p struct {
		PrinterName string `json:"printer_name"`
	}
	r.JSON(t, &p)
	if r.Status != 200 {
		t.Fatalf("pair/start: %d %s", r.Status, r.Body)
	}
	clean("pairing answer", p.PrinterName)
	pairings := d.Sim.Pairings()
	if len(pairings) != 1 {
		t.Fatalf("pairings at the marketplace: %+v", pairings)
	}
	clean("name sent to the marketplace", pairings[0].PrinterName)

	up := daemontest.Do(t, d.Client, "POST", "http://lmntd/machine/encrypted_print/start_print?filename="+url.QueryEscape(hostileName),
		[]byte("G28\nG1 X10 Y10\n"), http.Header{"Content-Type": {"application/octet-stream"}})
	var queued struct {
		Filename string `json:"filename"`
	}
	up.JSON(t, &queued)
	if up.Status != 200 {
		t.Fatalf("start_print: %d %s", up.Status, up.Body)
	}
	clean("upload answer", queued.Filename)
	var snap struct {
		Queue  []struct{ Name string } `json:"queue"`
		Active *struct{ Name string }  `json:"active"`
	}
	d.Call("GET", "/lmnt/v1/jobs", nil).JSON(t, &snap)
	names := []string{}
	for _, j := range snap.Queue {
		names = append(names, j.Name)
	}
	if snap.Active != nil {
		names = append(names, snap.Active.Name)
	}
	if len(names) != 1 {
		t.Fatalf("jobs: %+v", snap)
	}
	clean("job name", names[0])
}

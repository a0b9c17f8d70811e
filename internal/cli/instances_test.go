package cli_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/cli"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// TestInstances runs two lmntd as a farm host's default instance and
// instance printer_2 (their sockets laid out as the units lay them out):
// lmnt status shows both, --instance picks one, a dead instance makes the
// exit status 1, and bad names are refused.
func TestInstances(t *testing.T) {
	d1 := daemontest.Start(t, daemontest.Options{})
	d2 := daemontest.Start(t, daemontest.Options{NoStandin: true})
	run := t.TempDir()
	link := func(sock, path string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(sock, path); err != nil {
			t.Fatal(err)
		}
	}
	link(d1.Socket, filepath.Join(run, "api.sock"))
	link(d2.Socket, filepath.Join(run, "printer_2", "api.sock"))
	if err := os.MkdirAll(filepath.Join(run, "not.an-instance"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := cli.Main(append([]string{"--runtime-dir", run}, args...), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := main("status")
	if code != 0 || !strings.Contains(out, "instance (default)") || !strings.Contains(out, "instance printer_2: lmntd@printer_2.service (lmnt --instance printer_2") ||
		strings.Count(out, "klipper:     connected") != 1 || strings.Count(out, "klipper:     Klipper is not connected") != 1 {
		t.Fatalf("status of all: %d\n%s%s", code, out, errs)
	}
	code, out, _ = main("status", "--json")
	var all []struct {
		Instance string          `json:"instance"`
		Status   json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &all); code != 0 || err != nil || len(all) != 2 || all[0].Instance != "" || all[1].Instance != "printer_2" {
		t.Fatalf("status --json of all: %d %v\n%s", code, err, out)
	}
	for _, args := range [][]string{{"--instance", "printer_2", "status"}, {"status", "--instance", "printer_2"}} {
		code, out, _ = main(args...)
		if code != 0 || strings.Contains(out, "instance ") || !strings.Contains(out, "klipper:     Klipper is not connected") {
			t.Fatalf("lmnt %v: %d\n%s", args, code, out)
		}
	}
	if code, out, _ = main("jobs", "--instance", "printer_2", "--json"); code != 0 || !strings.Contains(out, `"queue"`) {
		t.Fatalf("jobs --instance printer_2: %d\n%s", code, out)
	}

	for _, args := range [][]string{{"--instance", "../x", "status"}, {"--instance", "printer_2", "--socket", d1.Socket, "status"},
		{"--instance", "printer_2", "setup", "--dry-run"}, {"--socket", d1.Socket, "status", "--instance", "printer_2"},
		{"pair", "--instance", "a/b"}} {
		if code, _, errs := main(args...); code != 2 || errs == "" {
			t.Errorf("lmnt %v: exit %d, stderr %q; want 2 and a reason", args, code, errs)
		}
	}

	// An instance whose socket nobody answers on is named, and fails the
	// command; the others are still shown.
	dead := filepath.Join(run, "printer_3", "api.sock")
	if err := os.MkdirAll(filepath.Dir(dead), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	code, out, errs = main("status")
	if code != 1 || !strings.Contains(out, "instance printer_3") || !strings.Contains(out, "not answering") ||
		!strings.Contains(out, "instance printer_2") {
		t.Fatalf("status with printer_3 down: %d\n%s%s", code, out, errs)
	}
}

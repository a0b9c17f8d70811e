package cli_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/cli"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/democube"
)

// fits80 fails the test for every line of out wider than 80 columns.
func fits80(t *testing.T, what, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("%s: a line of %d columns:\n%s", what, n, line)
		}
	}
}

// flat undoes the wrapping of a message for matching.
func flat(s string) string { return strings.Join(strings.Fields(s), " ") }

// TestOwnerCLI is lmnt as an owner meets it: files that are not G-code
// refused at once with a hint, --follow and status --watch, lmnt ready
// refused during a print, Klipper shut down in status, doctor and JSON,
// --socket misuse explained, usage on missing arguments, and every table
// and help text within 80 columns.
func TestOwnerCLI(t *testing.T) {
	cube := democube.Generate()
	// The stand-in "prints" the cube in about 2 s.
	d := daemontest.Start(t, daemontest.Options{StandinSpeed: int64(len(cube) / 2)})
	sock := d.Socket

	// pair --name while a code is pending warns that the name is not used.
	code, out, errOut := lmnt(t, sock, "", "pair", "--no-wait", "--name", "Bench MK4")
	m := regexp.MustCompile(`Pairing code: (\S+)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("pair: %d %s %s", code, out, errOut)
	}
	code, _, errOut = lmnt(t, sock, "", "pair", "--no-wait", "--name", "Other name")
	if code != 0 || !strings.Contains(errOut, `already pending for "Bench MK4"`) {
		t.Errorf("pair --name while pending: %d %q", code, errOut)
	}
	if _, err := d.Sim.ApprovePairing(m[1], ""); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("paired", func() bool {
		var st apitype.Status
		_, out, _ := lmnt(t, sock, "", "status", "--json")
		return json.Unmarshal([]byte(out), &st) == nil && st.Auth.Authenticated
	})

	// Files that are not G-code: refused before anything is queued.
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(cube)
	zw.Close()
	for _, c := range []struct{ path, want string }{
		{write("cube.gcode.gz", gz.Bytes()), "decompress it first"},
		{write("photo.png", append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)), "is a PNG image"},
		{write("notes.txt", []byte(strings.Repeat("Remember to buy more filament today.\n", 40))), "not G-code Klipper can print: not G-code"},
		{dir, "is a directory"},
		{filepath.Join(dir, "missing.gcode"), "no such file"},
	} {
		code, out, errOut := lmnt(t, sock, "", "print", c.path)
		if code != 1 || !strings.Contains(flat(errOut), c.want) || strings.Contains(errOut, "lmntd") {
			t.Errorf("print %s: %d %q %q, want exit 1 and %q", filepath.Base(c.path), code, out, errOut, c.want)
		}
		fits80(t, "print error", errOut)
	}
	var s apitype.Snapshot
	_, out, _ = lmnt(t, sock, "", "jobs", "--json")
	if json.Unmarshal([]byte(out), &s) != nil || s.Active != nil || len(s.Queue)+len(s.Finished) != 0 {
		t.Fatalf("a refused file reached the queue: %s", out)
	}
	// Missing argument: the usage, exit 2.
	if code, _, errOut = lmnt(t, sock, "", "print"); code != 2 || !strings.Contains(errOut, "Usage: lmnt print FILE") || !strings.Contains(errOut, "missing argument") {
		t.Errorf("print without a file: %d %q", code, errOut)
	}

	// print --follow, and lmnt ready refused while the cube prints.
	gfile := write(democube.Name, cube)
	if code, out, _ = lmnt(t, sock, "", "ready"); code != 0 {
		t.Fatalf("ready: %d %s", code, out)
	}
	var fout syncWriter
	var ferr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main([]string{"--socket", sock, "print", "--follow", gfile}, strings.NewReader(""), &fout, &ferr)
	}()
	d.WaitFor("the print", func() bool { return strings.Contains(fout.String(), "printing") })
	code, _, errOut = lmnt(t, sock, "", "ready")
	if code != 1 || !strings.Contains(errOut, "a print is running") {
		t.Errorf("ready during a print: %d %q", code, errOut)
	}
	select {
	case c := <-done:
		text := fout.String()
		if c != 0 || !strings.Contains(text, democube.Name+": succeeded") || strings.Contains(text, "download") || strings.Contains(text, "decrypt") {
			t.Errorf("print --follow: %d\n%s\n%s", c, text, ferr.String())
		}
		if n := strings.Count(text, "printing "); n > 11 {
			t.Errorf("print --follow wrote %d progress lines, want at most one per 10 %%:\n%s", n, text)
		}
		fits80(t, "print --follow", text)
	case <-time.After(30 * time.Second):
		t.Fatalf("print --follow did not end:\n%s", fout.String())
	}

	// status --watch follows a queued job to its end.
	if code, out, _ = lmnt(t, sock, "", "ready"); code != 0 {
		t.Fatalf("ready after the print: %d %s", code, out)
	}
	if code, out, errOut = lmnt(t, sock, "", "print", "--name", "Second cube", gfile); code != 0 {
		t.Fatalf("print: %d %s %s", code, out, errOut)
	}
	code, out, errOut = lmnt(t, sock, "", "status", "--watch")
	if code != 0 || !strings.Contains(out, "Second cube: succeeded") {
		t.Errorf("status --watch: %d\n%s\n%s", code, out, errOut)
	}

	// Everything an owner reads fits 80 columns.
	code, out, _ = lmnt(t, sock, "", "jobs")
	if code != 0 || !strings.Contains(out, "Second cube") || !strings.Contains(out, democube.Name) {
		t.Errorf("jobs: %d\n%s", code, out)
	}
	fits80(t, "lmnt jobs", out)
	_, out, _ = lmnt(t, sock, "", "status")
	fits80(t, "lmnt status", out)
	_, out, _ = lmnt(t, sock, "", "doctor", "--offline")
	fits80(t, "lmnt doctor", out)
	_, out, _ = lmnt(t, sock, "", "--help")
	fits80(t, "lmnt --help", out)
	for _, c := range cli.Commands {
		if c.Name == "version" {
			continue
		}
		code, out, errOut := lmnt(t, sock, "", c.Name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: lmnt "+c.Name) {
			t.Errorf("lmnt %s --help: %d %q %q", c.Name, code, out, errOut)
		}
		fits80(t, "lmnt "+c.Name+" --help", out)
	}
	bin := daemontest.Build(t)
	help, err := exec.Command(filepath.Join(bin, "lmntd"), "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	fits80(t, "lmntd --help", string(help))

	// Klipper shut down: degraded, with its reason and the next step.
	d.Standin.Shutdown("MCU 'mcu' shutdown: Timer too close\nThis often indicates the host computer is overloaded.")
	var st apitype.Status
	d.WaitFor("the shutdown in the status", func() bool {
		_, out, _ := lmnt(t, sock, "", "status", "--json")
		return json.Unmarshal([]byte(out), &st) == nil && st.Klipper.Problem != ""
	})
	if st.Health != apitype.HealthDegraded || st.Klipper.Problem != "Klipper is shut down: MCU 'mcu' shutdown: Timer too close" ||
		!strings.Contains(st.Klipper.NextStep, "FIRMWARE_RESTART") || !strings.HasPrefix(st.Summary, "Klipper is shut down") {
		t.Errorf("status while Klipper is shut down: %+v", st)
	}
	_, out, _ = lmnt(t, sock, "", "status")
	if !strings.Contains(out, "FIRMWARE_RESTART") {
		t.Errorf("lmnt status does not say what to do:\n%s", out)
	}
	fits80(t, "lmnt status (shutdown)", out)
	code, out, _ = lmnt(t, sock, "", "doctor", "--offline")
	if code != 1 || !strings.Contains(out, "Timer too close") || !strings.Contains(out, "FIRMWARE_RESTART") {
		t.Errorf("doctor while Klipper is shut down: %d\n%s", code, out)
	}
	d.Standin.FirmwareRestart()
	d.WaitFor("Klipper ready again", func() bool {
		_, out, _ := lmnt(t, sock, "", "status", "--json")
		return json.Unmarshal([]byte(out), &st) == nil && st.Health == apitype.HealthOK
	})

	// --socket at the wrong thing says what is wrong.
	for _, c := range []struct{ socket, want string }{
		{gfile, "is not a socket"},
		{"127.0.0.1:7125", "looks like a network address"},
		{d.Bridge, "looks like the Klipper bridge socket"},
		{dir, "is a directory"},
	} {
		code, _, errOut := lmnt(t, c.socket, "", "status")
		if code != 1 || !strings.Contains(flat(errOut), c.want) || strings.Contains(errOut, "protocol wrong type") {
			t.Errorf("--socket %s: %d %q, want %q", c.socket, code, errOut, c.want)
		}
	}
	// keys --help works, keys alone shows the usage.
	if code, out, _ = lmnt(t, sock, "", "keys", "--help"); code != 0 || !strings.Contains(out, "lmnt keys show") {
		t.Errorf("keys --help: %d %q", code, out)
	}
	if code, _, errOut = lmnt(t, sock, "", "keys"); code != 2 || !strings.Contains(errOut, "Usage: lmnt keys") {
		t.Errorf("keys: %d %q", code, errOut)
	}
}

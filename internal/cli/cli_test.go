package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/cli"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	daemontest.CleanupBuild()
	os.Exit(code)
}

// syncWriter lets a test read what a running command printed so far.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func lmnt(t *testing.T, socket string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Main(append([]string{"--socket", socket}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// TestCommands runs the CLI against a real daemon: status (human and
// JSON), pair with progress, jobs, ready, print, doctor's exit codes,
// keys, restart's refusal, and the messages when lmntd is not there.
func TestCommands(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	sock := d.Socket

	code, out, _ := lmnt(t, sock, "", "status")
	if code != 0 || !strings.Contains(out, "not paired: run lmnt pair") || !strings.Contains(out, "klipper:     connected") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	// Unpaired is degraded: exit 1.
	if code, out, _ = lmnt(t, sock, "", "doctor", "--offline"); code != 1 || !strings.Contains(out, "health: degraded") {
		t.Fatalf("doctor unpaired: %d\n%s", code, out)
	}

	// pair: shows the code, waits, exits 0 once approved.
	var pout syncWriter
	var perr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main([]string{"--socket", sock, "pair", "--name", "CLI printer"}, strings.NewReader(""), &pout, &perr)
	}()
	var code6 string
	d.WaitFor("the pairing code", func() bool {
		m := regexp.MustCompile(`Pairing code: (\S+)`).FindStringSubmatch(pout.String())
		if m != nil {
			code6 = m[1]
		}
		return m != nil
	})
	printerID, err := d.Sim.ApprovePairing(code6, "")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-done:
		if c != 0 || !strings.Contains(pout.String(), "Paired: printer "+printerID) {
			t.Fatalf("pair: %d\n%s\n%s", c, pout.String(), perr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("pair did not return after approval:\n%s", pout.String())
	}

	var st apitype.Status
	code, out, _ = lmnt(t, sock, "", "status", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Summary != "paired as CLI printer; Klipper ready; idle" {
		t.Fatalf("status --json: %d %s", code, out)
	}
	if code, out, _ = lmnt(t, sock, "", "doctor", "--offline"); code != 0 || !strings.Contains(out, "health: ok") {
		t.Fatalf("doctor paired: %d\n%s", code, out)
	}
	if code, out, _ = lmnt(t, sock, "", "ready"); code != 0 || !strings.Contains(out, "bed confirmed clear") {
		t.Fatalf("ready: %d %s", code, out)
	}

	// print: a plain G-code file (no key material: detected as plaintext).
	gfile := filepath.Join(d.Dir, "cube.gcode")
	for _, f := range testutil.Fixtures(t) {
		if f.Name == "prusaslicer_cube20_pla_0.20mm" {
			if err := os.WriteFile(gfile, f.Bytes(t), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	code, out, errOut := lmnt(t, sock, "", "print", gfile)
	m := regexp.MustCompile(`queued as job (local-\S+)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("print: %d %s %s", code, out, errOut)
	}
	d.WaitFor("the local job", func() bool {
		_, out, _ := lmnt(t, sock, "", "jobs", "--json")
		var s apitype.Snapshot
		return json.Unmarshal([]byte(out), &s) == nil && len(s.Finished) == 1 && s.Finished[0].ID == m[1] && s.Finished[0].State == apitype.JobSucceeded
	})
	if code, out, _ = lmnt(t, sock, "", "jobs"); code != 0 || !strings.Contains(out, m[1]) || !strings.Contains(out, "succeeded") {
		t.Fatalf("jobs: %d\n%s", code, out)
	}
	if code, _, errOut = lmnt(t, sock, "", "print", gfile, "--iv", "00"); code != 2 || !strings.Contains(errOut, "--iv needs --dek-package-file") {
		t.Fatalf("print --iv alone: %d %s", code, errOut)
	}

	// keys.
	code, out, _ = lmnt(t, sock, "", "keys", "show")
	if code != 0 || !regexp.MustCompile(`key id:\s+[0-9a-f]{64}`).MatchString(out) || !strings.Contains(out, "sealed with: software") {
		t.Fatalf("keys show: %d\n%s", code, out)
	}
	if code, _, errOut = lmnt(t, sock, "", "keys", "import-legacy", "--dir", filepath.Join(d.Dir, "nothing-here")); code != 1 || !strings.Contains(errOut, "no key file of the old plugin") {
		t.Fatalf("keys import-legacy on an empty dir: %d %s", code, errOut)
	}

	// restart needs --when-idle.
	if code, _, errOut = lmnt(t, sock, "", "restart"); code != 2 || !strings.Contains(errOut, "--when-idle") {
		t.Fatalf("restart without --when-idle: %d %s", code, errOut)
	}

	// No daemon: a clear message, and doctor is broken (exit 2).
	gone := filepath.Join(d.Dir, "no.sock")
	if code, _, errOut = lmnt(t, gone, "", "status"); code != 1 || !strings.Contains(errOut, "lmntd is not running") {
		t.Fatalf("status without a daemon: %d %s", code, errOut)
	}
	if code, out, _ = lmnt(t, gone, "", "doctor", "--offline", "--config", d.ConfigFile); code != 2 || !strings.Contains(out, "health: broken") ||
		!strings.Contains(out, "job compatibility") {
		t.Fatalf("doctor without a daemon: %d\n%s", code, out)
	}
}

// TestPairNoWait: first-boot scripts show the code and return at once; the
// daemon completes the pairing in the background once it is approved.
func TestPairNoWait(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	code, out, errOut := lmnt(t, d.Socket, "", "pair", "--no-wait", "--name", "Boot printer")
	m := regexp.MustCompile(`Pairing code: (\S+)`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "lmnt status") {
		t.Fatalf("pair --no-wait: %d\n%s\n%s", code, out, errOut)
	}
	if _, err := d.Sim.ApprovePairing(m[1], ""); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("the background pairing", func() bool {
		var st apitype.Status
		_, out, _ := lmnt(t, d.Socket, "", "status", "--json")
		return json.Unmarshal([]byte(out), &st) == nil && strings.HasPrefix(st.Summary, "paired as Boot printer")
	})
}

// TestSilentSocket: systemd's socket accepts connections while lmntd is not
// running; a command must give up with a clear message, not hang.
func TestSilentSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	code, _, errOut := lmnt(t, sock, "", "--timeout", "300ms", "status")
	if code != 1 || !strings.Contains(errOut, "did not answer") || !strings.Contains(errOut, "systemctl status lmntd") {
		t.Fatalf("status on a silent socket: %d %q", code, errOut)
	}
}

func TestVersionFlag(t *testing.T) {
	code, out, errOut := lmnt(t, "/nonexistent.sock", "", "--version")
	if code != 0 || !strings.HasPrefix(out, "lmnt ") {
		t.Fatalf("--version: %d %q %q", code, out, errOut)
	}
}

// TestRegisterLegacy: lmnt register logs in and registers (legacy
// marketplace), reading the password from a file.
func TestRegisterLegacy(t *testing.T) {
	sim, err := marketsim.New(marketsim.Options{KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	if _, err := sim.AddUser("me@example.com", "pw-123"); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Options{Sim: sim, Profile: "legacy", NoStandin: true})
	pw := filepath.Join(d.Dir, "pw")
	os.WriteFile(pw, []byte("pw-123\n"), 0o600)
	code, out, errOut := lmnt(t, d.Socket, "", "register", "--email", "me@example.com", "--password-file", pw, "--name", "Old faithful")
	if code != 0 || !strings.Contains(out, "Registered: printer ") {
		t.Fatalf("register: %d %s %s", code, out, errOut)
	}
	// And from stdin, with a wrong password.
	code, _, errOut = lmnt(t, d.Socket, "nope\n", "register", "--email", "me@example.com", "--name", "Old faithful")
	if code != 1 || !strings.Contains(errOut, "login failed") {
		t.Fatalf("register with a wrong password: %d %s", code, errOut)
	}
}

// TestAccessDeniedMessage: a caller outside group lmnt is told what to do.
func TestAccessDeniedMessage(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs the CLI as another uid and needs root: run it through make test, which runs as root")
	}
	d := daemontest.Start(t, daemontest.Options{NoStandin: true})
	os.Chmod(d.Socket, 0o666)
	bin := daemontest.Build(t)
	cmd := exec.Command(filepath.Join(bin, "lmnt"), "--socket", d.Socket, "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(flat(string(out)), "add yourself to group lmnt") {
		t.Fatalf("lmnt status as nobody: %v\n%s", err, out)
	}
	// And a socket it may not even open.
	os.Chmod(d.Socket, 0o600)
	cmd = exec.Command(filepath.Join(bin, "lmnt"), "--socket", d.Socket, "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(flat(string(out)), "permission denied") || !strings.Contains(flat(string(out)), "group lmnt") {
		t.Fatalf("lmnt status on a 0600 socket as nobody:\n%s", out)
	}
}

package seal

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/tcp"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// swtpm --daemon forks and its parent exits once the sockets listen; as a
	// child subreaper this test process adopts the daemon and can wait4 it
	// when stopping it, instead of polling for its disappearance.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// swtpm is a software TPM 2.0 (Debian's swtpm) reached over go-tpm's pure-Go
// TCP transport, as tooling-notes.md describes.
type swtpm struct {
	t        testing.TB
	stateDir string
	cmdAddr  string
	ctrlAddr string
	pid      int
}

// startSWTPM starts swtpm on free loopback ports with its state in stateDir
// (created if missing) and stops it at the end of the test.
func startSWTPM(t testing.TB, stateDir string) *swtpm {
	t.Helper()
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm not installed (scripts/install-deps.sh installs it): %v", err)
	}
	var lastErr error
	// The free ports are found by binding and releasing them, so another
	// process can take one in between; swtpm then fails to bind and we retry.
	for attempt := 0; attempt < 5; attempt++ {
		cmdPort, ctrlPort := freePort(t), freePort(t)
		pidFile := filepath.Join(stateDir, "swtpm.pid")
		os.Remove(pidFile)
		var stderr bytes.Buffer
		cmd := exec.Command(path, "socket", "--tpm2",
			"--tpmstate", "dir="+stateDir,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(cmdPort),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ctrlPort),
			"--flags", "not-need-init,startup-clear",
			"--pid", "file="+pidFile,
			"--daemon")
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		// --daemon returns once both sockets listen: no readiness polling.
		if err := cmd.Run(); err != nil {
			lastErr = fmt.Errorf("swtpm: %v: %s", err, stderr.String())
			continue
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("swtpm pid file: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("swtpm pid file: %v", err)
		}
		s := &swtpm{t: t, stateDir: stateDir, pid: pid,
			cmdAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(cmdPort)),
			ctrlAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ctrlPort))}
		t.Cleanup(s.stop)
		return s
	}
	t.Fatalf("starting swtpm: %v", lastErr)
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(testutil.FreePort(t))
	n, _ := strconv.Atoi(port)
	return n
}

// open is TPMOptions.Open for this instance.
func (s *swtpm) open() (transport.TPMCloser, error) {
	return tcp.Open(tcp.Config{CommandAddress: s.cmdAddr, PlatformAddress: s.ctrlAddr})
}

// stop terminates swtpm and reaps it; safe to call twice.
func (s *swtpm) stop() {
	if s.pid == 0 {
		return
	}
	pid := s.pid
	s.pid = 0
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		s.t.Errorf("stopping swtpm %d: %v", pid, err)
		return
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		s.t.Errorf("reaping swtpm %d: %v", pid, err)
	}
}

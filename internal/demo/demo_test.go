package demo_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/democube"
)

func TestMain(m *testing.M) {
	code := m.Run()
	daemontest.CleanupBuild()
	os.Exit(code)
}

// TestDemo runs lmnt-demo exactly as `make demo` does (the built
// lmnt-demo next to the built lmntd), as an unprivileged user when the test runs as
// root and without the shared fixtures (as on a fresh clone), and checks
// it printed the built-in cube, verified the print and cleaned up.
func TestDemo(t *testing.T) {
	bin := daemontest.Build(t)
	cmd := exec.Command(filepath.Join(bin, "lmnt-demo"), "--print-seconds", "1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "TMPDIR=" + os.TempDir()}
	cmd.Dir = "/"
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("lmnt-demo: %v\n%s", err, out.String())
	}
	took := time.Since(start)
	text := out.String()
	for _, want := range []string{"pairing code ", "paired as printer ", "downloaded, decrypted and checked", "printing: ",
		fmt.Sprintf("verified: Klipper read %d bytes, SHA-256 ", len(democube.Generate())), democube.Name, "success ", "everything worked"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`temporary state in (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo did not say where its state was:\n%s", text)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("demo left %s behind (%v)", m[1], err)
	}
	if took > 30*time.Second {
		t.Errorf("demo took %s, want under 30 s", took)
	}
	t.Logf("lmnt-demo took %s:\n%s", took.Round(time.Millisecond), text)
}

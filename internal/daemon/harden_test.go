package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// TestNotDumpable is issue 15's same-uid attack: another process of lmntd's
// uid reads /proc/<pid>/environ and /proc/<pid>/mem (or attaches ptrace) to
// lift keys from memory. The real lmntd binary, run as uid 65534, refuses
// it (PR_SET_DUMPABLE 0); an ordinary process of that uid does not, which
// shows the attack itself works.
func TestNotDumpable(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs lmntd and its attacker as uid 65534 and needs root: run it through make test, which runs as root")
	}
	bin := filepath.Join(daemontest.Build(t), "lmntd")
	d := daemontest.Setup(t, daemontest.Options{})
	for _, p := range []string{filepath.Dir(bin), d.Dir} {
		openPath(t, filepath.Join(p, "x"))
	}
	if err := filepath.Walk(d.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	}); err != nil {
		t.Fatal(err)
	}
	asNobody := func(name string, args ...string) *exec.Cmd {
		return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)...)
	}
	// attack reads /proc/<pid>/environ and /proc/<pid>/mem as uid 65534.
	attack := func(pid int) string {
		out, _ := asNobody("/bin/sh", "-c", `cat /proc/$0/environ >/dev/null && echo environ-read; `+
			`dd if=/proc/$0/mem bs=1 count=1 skip=$(printf %d 0x$(head -1 /proc/$0/maps | cut -d- -f1)) 2>/dev/null | wc -c`, strconv.Itoa(pid)).CombinedOutput()
		return strings.TrimSpace(string(out))
	}

	control := asNobody("sleep", "30")
	if err := control.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { control.Process.Kill(); control.Wait() }()
	time.Sleep(200 * time.Millisecond)
	if got := attack(control.Process.Pid); !strings.Contains(got, "environ-read") || !strings.HasSuffix(got, "1") {
		t.Fatalf("the attack does not even work on an ordinary process of the same uid (%q): the test proves nothing", got)
	}

	log := &daemontest.SyncBuffer{}
	lmntd := asNobody(bin, "--config", d.ConfigFile, "--host-root", d.HostRoot)
	lmntd.Stdout, lmntd.Stderr = log, log
	if err := lmntd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { lmntd.Process.Signal(syscall.SIGTERM); lmntd.Wait() }()
	testutil.Eventually(t, 20*time.Second, "lmntd as uid 65534 to start", func() bool { return strings.Contains(log.String(), "lmntd ready") })
	if got := attack(lmntd.Process.Pid); strings.Contains(got, "environ-read") || !strings.HasSuffix(got, "\n0") {
		t.Errorf("same-uid process read lmntd's memory or environment: %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(lmntd.Process.Pid)+"/environ", &st); err != nil || st.Uid != 0 {
		t.Errorf("/proc/<lmntd>/environ is owned by uid %d (%v), want root's (non-dumpable)", st.Uid, err)
	}
}

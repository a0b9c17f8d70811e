//go:build system

package system

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// containerTimeout bounds the whole boot, install, print, upgrade and purge.
const containerTimeout = 8 * time.Minute

// systestUnit runs container/systest.sh once the container is up.
const systestUnit = `[Unit]
Description=lmntd system test
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/systest/systest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
`

// TestDebianContainer boots a debootstrapped Debian 12 root with systemd as
// PID 1 (systemd-nspawn -b, its own network namespace: only its loopback)
// and runs container/systest.sh in it: apt-get install from the signed
// repository, the sockets, lmnt setup for a Klipper stand-in running as pi,
// a job from the marketplace simulator printed through it, the upgrade to
// the beta build keeping state and configuration, and the purge leaving the
// system as it was.
func TestDebianContainer(t *testing.T) {
	repo := repository(t)
	root := filepath.Join(t.TempDir(), "root")

	doneRoot := stage(t, "Debian 12 amd64 root (scripts/rootfs.sh, cached)")
	run(t, cmdOpts{timeout: 10 * time.Minute}, filepath.Join(repoRoot, "scripts/rootfs.sh"), "amd64", root)
	run(t, cmdOpts{quiet: true}, "cp", "-a", repo.dir, filepath.Join(root, "srv/apt"))
	copyFile(t, repo.keyring, filepath.Join(root, "usr/share/keyrings/lmntd-archive-keyring.gpg"), 0o644)
	goBuild(t, "./cmd/lmnt-marketsim", filepath.Join(root, "usr/local/bin/lmnt-marketsim"), "systest")
	goBuild(t, "./cmd/lmnt-klipper-standin", filepath.Join(root, "usr/local/bin/lmnt-klipper-standin"), "systest")
	prepareSystest(t, root, "systest.sh")
	writeFile(t, filepath.Join(root, "systest/env"), "V1="+repo.v1+"\nV2="+repo.v2+"\n", 0o644)
	doneRoot()

	doneBoot := stage(t, "nspawn boot + install, setup, print, upgrade, purge (inside)")
	if failure := bootSystest(t, root, containerTimeout, "lmntd.service", "lmntd.socket", "klipper.service", "marketsim.service", "systest.service"); failure != "" {
		if os.Getenv("LMNTD_SYSTEST_KEEP") != "" {
			keep, _ := os.MkdirTemp("", "lmntd-systest-root-")
			os.Rename(root, filepath.Join(keep, "root"))
			t.Logf("container root kept in %s/root (LMNTD_SYSTEST_KEEP)", keep)
		}
		doneBoot()
		t.Fatalf("the container test failed: %s", failure)
	}
	doneBoot()
}

// prepareSystest lays the test script (test/system/container/SCRIPT) with
// its shared prelude (lib.sh), the cube fixture and a boot that runs only
// the script (systest.service, no consoles or logind, a persistent
// journal) into root.
func prepareSystest(t *testing.T, root, script string) {
	t.Helper()
	shared := os.Getenv("LMNTD_SHARED")
	if shared == "" {
		shared = filepath.Join(repoRoot, "..", "shared")
	}
	copyFile(t, filepath.Join(shared, "fixtures", "prusaslicer_cube20_pla_0.20mm.gcode"), filepath.Join(root, "systest/cube.gcode"), 0o644)
	copyFile(t, filepath.Join(repoRoot, "test/system/container", script), filepath.Join(root, "systest/systest.sh"), 0o755)
	copyFile(t, filepath.Join(repoRoot, "test/system/container/lib.sh"), filepath.Join(root, "systest/lib.sh"), 0o644)
	units := filepath.Join(root, "etc/systemd/system")
	writeFile(t, filepath.Join(units, "systest.service"), systestUnit, 0o644)
	for link, target := range map[string]string{
		"multi-user.target.wants/systest.service": "/etc/systemd/system/systest.service",
		"default.target": "/lib/systemd/system/multi-user.target",
		// Nothing to log in on, and no seat: consoles and logind only slow the boot.
		"console-getty.service":  "/dev/null",
		"getty.target":           "/dev/null",
		"systemd-logind.service": "/dev/null",
	} {
		p := filepath.Join(units, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// A persistent journal, read after the container is gone.
	if err := os.MkdirAll(filepath.Join(root, "var/log/journal"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// bootSystest boots root with systemd-nspawn until the script powers it
// off, logs what the script wrote, and returns why it failed ("" when its
// status was 0), after logging the journal of units.
func bootSystest(t *testing.T, root string, timeout time.Duration, units ...string) string {
	t.Helper()
	out, err := tryRun(t, cmdOpts{timeout: timeout, quiet: true}, "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
		"--private-network", "--console=pipe", "--system-call-filter=@memlock memfd_secret", "--directory="+root, "--boot")
	log, logErr := os.ReadFile(filepath.Join(root, "systest/out/log"))
	if logErr == nil {
		t.Logf("inside the container:\n%s", log)
	} else {
		t.Logf("no log from inside the container (%v); the console said:\n%s", logErr, out)
	}
	rc, rcErr := os.ReadFile(filepath.Join(root, "systest/out/rc"))
	if err == nil && rcErr == nil && strings.TrimSpace(string(rc)) == "0" {
		return ""
	}
	args := []string{"--directory=" + filepath.Join(root, "var/log/journal"), "--no-pager", "-o", "short-monotonic"}
	for _, u := range units {
		args = append(args, "-u", u)
	}
	journal, _ := tryRun(t, cmdOpts{quiet: true}, "journalctl", args...)
	if len(journal) > 20000 {
		journal = journal[len(journal)-20000:]
	}
	t.Logf("journal:\n%s", journal)
	return fmt.Sprintf("nspawn %v, status %q (%v)%s", err, strings.TrimSpace(string(rc)), rcErr, lastStepAndFailure(string(log)))
}

// lastStepAndFailure picks from the script's log its last step and the
// lines that ended it (the script's own FAIL line, or the output of the
// command whose status stopped it under set -e), repeated in the failure so
// that they survive a CI log cut to its tail: the journal printed after the
// log is longer than most tails.
func lastStepAndFailure(log string) string {
	const lastLines = 8
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	step := -1
	for i, line := range lines {
		if strings.HasPrefix(line, "== [") {
			step = i
		}
	}
	if step < 0 {
		return ""
	}
	const longest = 200 // apt's progress makes lines of thousands
	var b strings.Builder
	b.WriteString("\n  last step: " + lines[step] + "\n  it ended with:")
	for _, line := range lines[max(step+1, len(lines)-lastLines):] {
		if len(line) > longest {
			line = "…" + line[len(line)-longest:]
		}
		b.WriteString("\n    " + line)
	}
	return b.String()
}

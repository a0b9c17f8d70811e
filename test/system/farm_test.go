//go:build system

package system

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFarmInstances boots a debootstrapped Debian 12 root with systemd as
// PID 1 and runs container/farm.sh in it: a one-printer install as today
// (lmntd.service) pairs; two more Klipper stand-ins are added as Klipper
// instances, each served by its own lmntd@NAME (the template units), wired
// by hand as the README says. The one-printer install keeps its key, token
// and pairing; the instances pair as different printers with different
// keys; each prints its own job and never sees another's; removing one
// instance leaves the others paired and printing. lmntd and its units are
// copied in, not installed from the repository: the package upgrade itself
// is the container test's.
func TestFarmInstances(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	doneRoot := stage(t, "farm: Debian 12 amd64 root with lmntd, the template units, two stand-ins")
	run(t, cmdOpts{timeout: 10 * time.Minute}, filepath.Join(repoRoot, "scripts/rootfs.sh"), "amd64", root)
	goBuild(t, "./cmd/lmntd", filepath.Join(root, "usr/bin/lmntd"), "farm")
	goBuild(t, "./cmd/lmnt", filepath.Join(root, "usr/bin/lmnt"), "farm")
	goBuild(t, "./cmd/lmnt-marketsim", filepath.Join(root, "usr/local/bin/lmnt-marketsim"), "farm")
	goBuild(t, "./cmd/lmnt-klipper-standin", filepath.Join(root, "usr/local/bin/lmnt-klipper-standin"), "farm")
	for _, u := range []string{"lmntd.service", "lmntd.socket", "lmntd-klipper.socket", "lmntd@.service", "lmntd@.socket", "lmntd-klipper@.socket"} {
		copyFile(t, filepath.Join(repoRoot, "systemd", u), filepath.Join(root, "lib/systemd/system", u), 0o644)
	}
	copyFile(t, filepath.Join(repoRoot, "systemd/lmntd.sysusers"), filepath.Join(root, "usr/lib/sysusers.d/lmntd.conf"), 0o644)
	copyFile(t, filepath.Join(repoRoot, "systemd/lmntd.tmpfiles"), filepath.Join(root, "usr/lib/tmpfiles.d/lmntd.conf"), 0o644)
	shared := os.Getenv("LMNTD_SHARED")
	if shared == "" {
		shared = filepath.Join(repoRoot, "..", "shared")
	}
	copyFile(t, filepath.Join(shared, "fixtures", "prusaslicer_cube20_pla_0.20mm.gcode"), filepath.Join(root, "systest/cube.gcode"), 0o644)
	copyFile(t, filepath.Join(repoRoot, "test/system/container/farm.sh"), filepath.Join(root, "systest/systest.sh"), 0o755)
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		copyFile(t, filepath.Join(repoRoot, "packaging/deb", script), filepath.Join(root, "systest", script), 0o755)
	}
	for _, extra := range []string{"encrypted_file_bridge.py", "secure_print.py"} {
		copyFile(t, filepath.Join(repoRoot, "packaging/klipper", extra), filepath.Join(root, "usr/share/lmntd/klipper", extra), 0o644)
	}
	units := filepath.Join(root, "etc/systemd/system")
	writeFile(t, filepath.Join(units, "systest.service"), systestUnit, 0o644)
	for link, target := range map[string]string{
		"multi-user.target.wants/systest.service": "/etc/systemd/system/systest.service",
		"default.target":         "/lib/systemd/system/multi-user.target",
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
	if err := os.MkdirAll(filepath.Join(root, "var/log/journal"), 0o755); err != nil {
		t.Fatal(err)
	}
	doneRoot()

	doneBoot := stage(t, "farm: nspawn boot, two instances pair, print, stay apart, one removed")
	out, err := tryRun(t, cmdOpts{timeout: 5 * time.Minute, quiet: true}, "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
		"--private-network", "--console=pipe", "--system-call-filter=@memlock memfd_secret", "--directory="+root, "--boot")
	doneBoot()
	if log, err := os.ReadFile(filepath.Join(root, "systest/out/log")); err == nil {
		t.Logf("inside the container:\n%s", log)
	} else {
		t.Logf("no log from inside the container (%v); the console said:\n%s", err, out)
	}
	rc, rcErr := os.ReadFile(filepath.Join(root, "systest/out/rc"))
	if err != nil || rcErr != nil || strings.TrimSpace(string(rc)) != "0" {
		journal, _ := tryRun(t, cmdOpts{quiet: true}, "journalctl", "--directory="+filepath.Join(root, "var/log/journal"),
			"--no-pager", "-o", "short-monotonic", "-u", "lmntd.service", "-u", "klipper.service", "-u", "lmntd@printer_1.service", "-u", "lmntd@printer_2.service",
			"-u", "klipper-printer_1.service", "-u", "klipper-printer_2.service", "-u", "marketsim.service", "-u", "systest.service")
		if len(journal) > 20000 {
			journal = journal[len(journal)-20000:]
		}
		t.Logf("journal:\n%s", journal)
		t.Fatalf("the farm test failed: nspawn %v, status %q (%v)", err, strings.TrimSpace(string(rc)), rcErr)
	}
}

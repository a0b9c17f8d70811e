//go:build system

package system

import (
	"path/filepath"
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
	prepareSystest(t, root, "farm.sh")
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		copyFile(t, filepath.Join(repoRoot, "packaging/deb", script), filepath.Join(root, "systest", script), 0o755)
	}
	for _, extra := range []string{"encrypted_file_bridge.py", "secure_print.py"} {
		copyFile(t, filepath.Join(repoRoot, "packaging/klipper", extra), filepath.Join(root, "usr/share/lmntd/klipper", extra), 0o644)
	}
	doneRoot()

	doneBoot := stage(t, "farm: nspawn boot, two instances pair, print, stay apart, one removed")
	failure := bootSystest(t, root, 5*time.Minute, "lmntd.service", "klipper.service", "lmntd@printer_1.service", "lmntd@printer_2.service",
		"klipper-printer_1.service", "klipper-printer_2.service", "marketsim.service", "systest.service")
	doneBoot()
	if failure != "" {
		t.Fatalf("the farm test failed: %s", failure)
	}
}

//go:build system

package system

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the acceptance bound for lmntd.service.
const maxExposure = 1.5

var exposureRE = regexp.MustCompile(`Overall exposure level for lmntd\.service: ([0-9.]+)`)

// TestUnitHardening scores lmntd.service the way systemd does and fails above
// maxExposure.
func TestUnitHardening(t *testing.T) {
	done := stage(t, "systemd-analyze security --offline=true lmntd.service")
	defer done()
	out, err := tryRun(t, cmdOpts{quiet: true}, "systemd-analyze", "security", "--offline=true", "--no-pager",
		filepath.Join(repoRoot, "systemd", "lmntd.service"))
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	// Print what still counts against the unit, then the score.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "✗") {
			t.Log(strings.TrimSpace(line))
		}
	}
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in the output:\n%s", out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("lmntd.service exposure level: %.1f (acceptance: at most %.1f)", score, maxExposure)
	if score > maxExposure {
		t.Errorf("exposure %.1f is above %.1f", score, maxExposure)
	}
}

// TestUnitVerify runs systemd-analyze verify on the units as installed in a
// staged root (the binary must exist there), with the drop-in `lmnt setup`
// writes, and checks the sysusers.d and tmpfiles.d files by applying them to
// the staged root. Any output on stderr is a failure: verify exits 0 on
// unknown keys.
func TestUnitVerify(t *testing.T) {
	done := stage(t, "systemd-analyze verify (staged root), sysusers, tmpfiles")
	defer done()
	root := t.TempDir()
	goBuild(t, "./cmd/lmntd", filepath.Join(root, "usr/bin/lmntd"), "verify")
	// The distribution's units (targets, sockets.target, ...) the ours refer to.
	if err := os.MkdirAll(filepath.Join(root, "lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, cmdOpts{quiet: true}, "cp", "-a", "/lib/systemd/system", filepath.Join(root, "lib/systemd/"))
	units := []string{"lmntd.service", "lmntd.socket", "lmntd-klipper.socket", "lmntd-http.socket", "lmntd-proxy.socket"}
	for _, u := range units {
		copyFile(t, filepath.Join(repoRoot, "systemd", u), filepath.Join(root, "lib/systemd/system", u), 0o644)
	}
	// A farm host's further instance (issue 20): the template units, verified as instance printer_2.
	for _, u := range []string{"lmntd@.service", "lmntd@.socket", "lmntd-klipper@.socket"} {
		copyFile(t, filepath.Join(repoRoot, "systemd", u), filepath.Join(root, "lib/systemd/system", u), 0o644)
	}
	units = append(units, "lmntd@printer_2.service", "lmntd@printer_2.socket", "lmntd-klipper@printer_2.socket")
	// The drop-in of a MainsailOS install, as internal/setup writes it.
	writeFile(t, filepath.Join(root, "etc/systemd/system/lmntd.service.d/klipper.conf"),
		"[Service]\nBindReadOnlyPaths=-/home/pi/printer_data/config\n", 0o644)
	// verify resolves /bin/kill (ExecReload) and the user inside the root.
	copyFile(t, "/bin/kill", filepath.Join(root, "bin/kill"), 0o755)
	copyFile(t, filepath.Join(repoRoot, "systemd/lmntd.sysusers"), filepath.Join(root, "usr/lib/sysusers.d/lmntd.conf"), 0o644)
	copyFile(t, filepath.Join(repoRoot, "systemd/lmntd.tmpfiles"), filepath.Join(root, "usr/lib/tmpfiles.d/lmntd.conf"), 0o644)
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\n", 0o644)

	// stderrOf runs a tool; strict: any stderr output is a failure.
	stderrOf := func(strict bool, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t.Logf("$ %s %s", name, strings.Join(args, " "))
		err := cmd.Run()
		if s := strings.TrimSpace(stdout.String()); s != "" {
			t.Log(s)
		}
		if err != nil || (strict && stderr.Len() > 0) {
			t.Errorf("%s: %v\nstderr:\n%s", name, err, stderr.String())
		} else if s := strings.TrimSpace(stderr.String()); s != "" {
			t.Log(s)
		}
	}
	stderrOf(false, "systemd-sysusers", "--root="+root)
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !regexp.MustCompile(`(?m)^lmnt:x:\d+:lmntd$`).Match(group) {
		t.Errorf("sysusers did not create group lmnt with member lmntd:\n%s", group)
	}
	stderrOf(false, "systemd-tmpfiles", "--root="+root, "--create", "lmntd.conf")
	if st, err := os.Stat(filepath.Join(root, "run/lmntd")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("tmpfiles: /run/lmntd %v %v, want mode 0750", st, err)
	}
	args := append([]string{"verify", "--root=" + root, "--man=no"}, units...)
	stderrOf(true, "systemd-analyze", args...)
}

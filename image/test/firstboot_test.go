//go:build system

package imagetest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

// probeScript records, once per boot, what the first-boot unit did and what
// the console and login banner show, then powers the container off. It runs
// after lmntd-firstboot.service has finished (successfully or not).
const probeScript = `#!/bin/sh
dir=/var/lib/lmntd-image-probe
mkdir -p "$dir"
n=$(($(ls "$dir" | wc -l) + 1))
{
  systemctl show -p Result -p ConditionResult -p ExecMainStatus -p NRestarts lmntd-firstboot.service
  echo "=== issue"
  script -qc 'agetty --show-issue' /dev/null
  echo "=== motd"
  /etc/update-motd.d/60-lmntd
  echo "=== end"
} >"$dir/boot-$n" 2>&1
systemctl poweroff --no-block
`

const probeUnit = `[Unit]
Description=lmntd image test: record this boot, then power off
After=lmntd-firstboot.service lmntd.socket

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lmntd-image-probe

[Install]
WantedBy=multi-user.target
`

// bootReport is one boot as the probe saw it.
type bootReport struct {
	props        map[string]string
	issue, motd  string
	raw, console string
}

// boot boots root under systemd-nspawn (systemd as PID 1, host network so
// the loopback marketplace is reachable) until the probe powers it off.
func boot(t *testing.T, root string, n int) bootReport {
	t.Helper()
	var console string
	stage(t, fmt.Sprintf("nspawn boot %d", n), func() {
		var err error
		console, err = run(3*time.Minute, "", "timeout", "-k", "10", "150",
			"systemd-nspawn", "-q", "--register=no", "--keep-unit", "--console=pipe",
			"--system-call-filter=@memlock memfd_secret", "-D", root, "-b")
		if err != nil {
			t.Fatalf("boot %d: %v", n, err)
		}
	})
	raw, err := os.ReadFile(filepath.Join(root, "var/lib/lmntd-image-probe", fmt.Sprintf("boot-%d", n)))
	if err != nil {
		t.Fatalf("boot %d left no probe report (%v); console:\n%s", n, err, console)
	}
	r := bootReport{props: map[string]string{}, raw: string(raw), console: console}
	head, rest, _ := strings.Cut(string(raw), "=== issue\n")
	r.issue, rest, _ = strings.Cut(rest, "=== motd\n")
	r.motd, _, _ = strings.Cut(rest, "=== end\n")
	for _, line := range strings.Split(head, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			r.props[k] = v
		}
	}
	return r
}

func journal(t *testing.T, root string, args ...string) string {
	t.Helper()
	return mustRun(t, time.Minute, "", "journalctl", append([]string{"--directory=" + filepath.Join(root, "var/log/journal"), "--no-pager"}, args...)...)
}

// TestFirstBootNspawn boots the overlay on an amd64 root three times:
// without Klipper's user (the unit fails, leaves no marker, and is retried
// at the next boot), with it (setup and pairing against a simulated
// marketplace, the code on the console and in the login banner, the
// marker), and once more (nothing runs again).
func TestFirstBootNspawn(t *testing.T) {
	deb := debFor(t, "amd64")
	sim, err := marketsim.New(marketsim.Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	root := newRoot(t, "amd64")
	cfg := filepath.Join(t.TempDir(), "lmntd.toml")
	writeFile(t, cfg, 0o644, fmt.Sprintf("# lmntd image test: the simulated marketplace on the host's loopback\n[marketplace]\nurl = %q\n\n[push]\nenabled = false\n", sim.URL()))
	dir := assemble(t, "custopizer", "--deb", deb, "--config", cfg)
	emulate(t, "custopizer", root, dir)

	// systemd's own opinion of the unit (it exits 0 on unknown keys, so any
	// output is a finding).
	if out := mustRun(t, time.Minute, "", "systemd-analyze", "verify", "--root="+root, "lmntd-firstboot.service"); out != "" {
		t.Errorf("systemd-analyze verify lmntd-firstboot.service:\n%s", out)
	}

	// Boot to multi-user.target with a persistent journal and the probe.
	if err := os.Symlink("/lib/systemd/system/multi-user.target", filepath.Join(root, "etc/systemd/system/default.target")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/log/journal"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "usr/local/sbin/lmntd-image-probe"), 0o755, probeScript)
	writeFile(t, filepath.Join(root, "etc/systemd/system/lmntd-image-probe.service"), 0o644, probeUnit)
	mustChroot(t, root, "systemctl", "enable", "lmntd-image-probe.service")
	defaults := filepath.Join(root, "etc/default/lmntd-firstboot")
	original := readFile(t, defaults)
	marker := filepath.Join(root, "var/lib/lmntd/.firstboot-done")

	// Boot 1: no Klipper yet. A short wait, and no in-boot retry, so the
	// probe sees the failure at once; the retry that matters is the next boot.
	if !strings.Contains(original, "\nWAIT_SECONDS=900\n") {
		t.Fatalf("/etc/default/lmntd-firstboot has no WAIT_SECONDS=900 to shorten:\n%s", original)
	}
	writeFile(t, defaults, 0o644, strings.Replace(original, "\nWAIT_SECONDS=900\n", "\nWAIT_SECONDS=2\n", 1))
	dropIn := filepath.Join(root, "etc/systemd/system/lmntd-firstboot.service.d/image-test.conf")
	writeFile(t, dropIn, 0o644, "[Service]\nRestart=no\n")
	r1 := boot(t, root, 1)
	if r1.props["Result"] != "exit-code" || r1.props["ConditionResult"] != "yes" {
		t.Errorf("boot 1 without Klipper: first-boot unit %v, want it run and failed\n%s", r1.props, r1.raw)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a failed first boot wrote the marker (%v)", err)
	}

	// Boot 2: Klipper's user and printer_data exist now.
	writeFile(t, defaults, 0o644, original)
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	addKlipper(t, root, "pi")
	r2 := boot(t, root, 2)
	if r2.props["Result"] != "success" || r2.props["ConditionResult"] != "yes" {
		t.Fatalf("boot 2: first-boot unit %v, want it run and succeeded\n%s\nits journal:\n%s", r2.props, r2.raw,
			journal(t, root, "-o", "cat", "_SYSTEMD_UNIT=lmntd-firstboot.service"))
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("boot 2 succeeded but wrote no marker: %v", err)
	}
	t.Logf("boot 2: the console shows:\n%s\nthe login banner shows:%s", r2.issue, r2.motd)
	pairings := sim.Pairings()
	if len(pairings) != 1 {
		t.Fatalf("the marketplace saw %d pairing sessions, want 1: %+v", len(pairings), pairings)
	}
	code := pairings[0].Code
	if !regexp.MustCompile(`(?m)^\s*LMNT Marketplace:`).MatchString(r2.issue) || !strings.Contains(r2.issue, code) {
		t.Errorf("the console (agetty issue) does not show pairing code %s:\n%s", code, r2.issue)
	}
	if !strings.Contains(r2.motd, "LMNT Marketplace printer agent:") || !strings.Contains(r2.motd, code) {
		t.Errorf("the login banner does not show pairing code %s:\n%s", code, r2.motd)
	}
	// What `lmnt setup` did for Klipper's user.
	if !contains(groupMembers(t, root, "lmnt"), "pi") {
		t.Errorf("setup did not add Klipper's user pi to group lmnt")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/lmntd.service.d/klipper.conf")); err != nil {
		t.Errorf("setup wrote no lmntd.service drop-in for Klipper's config: %v", err)
	}

	// Boot 3: the marker stops the unit; the console keeps no stale code.
	r3 := boot(t, root, 3)
	if r3.props["ConditionResult"] != "no" {
		t.Errorf("boot 3: first-boot unit %v, want it skipped by its condition\n%s", r3.props, r3.raw)
	}
	if strings.Contains(r3.issue, code) {
		t.Errorf("boot 3 console still shows the first boot's code:\n%s", r3.issue)
	}

	list := journal(t, root, "--list-boots")
	if boots := strings.Count(strings.TrimSpace(list), "\n"); boots != 3 { // lines after the header
		t.Errorf("the journal has %d boots, want 3:\n%s", boots, list)
	}
	runs := journal(t, root, "-o", "cat", "_SYSTEMD_UNIT=lmntd-firstboot.service")
	for _, c := range []struct {
		line string
		n    int
	}{
		{"lmntd-firstboot: no Klipper user", 1},
		{"lmntd-firstboot: Klipper runs as 'pi'", 1},
		{"lmntd-firstboot: done", 1},
	} {
		if got := strings.Count(runs, c.line); got != c.n {
			t.Errorf("the journal has %q %d times, want %d:\n%s", c.line, got, c.n, runs)
		}
	}
}

//go:build system

package imagetest

import (
	"context"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// enabledUnits are the wants symlinks the preset must create.
var enabledUnits = map[string]string{
	"lmntd.socket":            "sockets.target.wants",
	"lmntd-klipper.socket":    "sockets.target.wants",
	"lmntd.service":           "multi-user.target.wants",
	"lmntd-firstboot.service": "multi-user.target.wants",
}

func TestGlueArm64(t *testing.T) {
	debArm64, debAmd64 := debFor(t, "arm64"), debFor(t, "amd64")
	version := debVersion(t, debArm64)

	// The first root fills rootfs.sh's cache (a debootstrap through qemu the
	// first time); the builders then run in parallel on their own copies.
	piGenRoot := newRoot(t, "arm64")

	t.Run("pi-gen", func(t *testing.T) {
		t.Parallel()
		root := piGenRoot
		// What earlier pi-gen stages leave: fresh package lists (stage0) and
		// the firmware's config.txt.
		stage(t, "apt-get update (pi-gen stage0)", func() { mustChroot(t, root, "apt-get", "update", "-q") })
		writeFile(t, filepath.Join(root, "boot/firmware/config.txt"), 0o755, "# Raspberry Pi firmware settings\n[all]\narm_64bit=1\n")
		dir := assemble(t, "pi-gen", "--deb", debAmd64, "--deb", debArm64, "--rpi-tpm", "--klipper-user", "pi")
		// STAGE_LIST="... stage2 stage-lmntd" as image/README.md says: stage2
		// keeps its EXPORT_IMAGE, silenced by SKIP_IMAGES, and a sub-stage
		// that already ran on_chroot, so /tmp and /run are pi-gen's tmpfs
		// when lmntd's host script runs.
		stage2 := filepath.Join(t.TempDir(), "stage2")
		writeFile(t, filepath.Join(stage2, "EXPORT_IMAGE"), 0o644, "IMG_SUFFIX=\"-lite\"\n")
		writeFile(t, filepath.Join(stage2, "SKIP_IMAGES"), 0o644, "")
		writeFile(t, filepath.Join(stage2, "01-sys-tweaks", "01-run-chroot.sh"), 0o644, "#!/bin/bash -e\ntest -d /tmp\n")
		var out string
		for i := 0; i < 2; i++ { // twice: the glue must be idempotent
			out = emulate(t, "pi-gen", root, stage2, dir)
		}
		if !strings.Contains(out, "emulate: pi-gen exports "+filepath.Base(dir)+"\n") || strings.Contains(out, "exports stage2") {
			t.Errorf("pi-gen should export the lmntd stage, and only it:\n%s", out)
		}
		checkInstalled(t, root, version, false)
		if _, err := os.Stat(filepath.Join(root, "var/tmp/lmntd-image")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the pi-gen stage left /var/tmp/lmntd-image behind (%v)", err)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/apt/sources.list.d/lmntd.sources")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("an apt source was written without --apt-url (%v)", err)
		}
		cfg := readFile(t, filepath.Join(root, "boot/firmware/config.txt"))
		if n := strings.Count(cfg, "\ndtoverlay=tpm-slb9670\n"); n != 1 {
			t.Errorf("config.txt has the TPM overlay %d times, want once:\n%s", n, cfg)
		}
		if !strings.Contains(cfg, "dtparam=spi=on") || !strings.HasPrefix(cfg, "# Raspberry Pi firmware settings\n") {
			t.Errorf("config.txt lost its content or lacks dtparam=spi=on:\n%s", cfg)
		}
		if !contains(groupMembers(t, root, "tss"), "lmntd") {
			t.Errorf("lmntd is not in group tss: it could not open /dev/tpmrm0")
		}
		if got := readFile(t, filepath.Join(root, "etc/default/lmntd-firstboot")); !strings.Contains(got, "\nKLIPPER_USER=pi\n") {
			t.Errorf("/etc/default/lmntd-firstboot does not name Klipper's user pi:\n%s", got)
		}
	})

	t.Run("custopizer", func(t *testing.T) {
		t.Parallel()
		repoSrv := signedRepo(t)
		root := newRoot(t, "arm64")
		// A MainsailOS-like root: Klipper as pi, and Mainsail's nginx site.
		addKlipper(t, root, "pi")
		site := "upstream apiserver {\n    ip_hash;\n    server 127.0.0.1:7125;\n}\n\nserver {\n    listen 80 default_server;\n\n    root /home/pi/mainsail;\n\n    location / {\n        try_files $uri $uri/ /index.html;\n    }\n}\n"
		writeFile(t, filepath.Join(root, "etc/nginx/sites-available/mainsail"), 0o644, site)
		imageConfig := filepath.Join(t.TempDir(), "maker.toml")
		writeFile(t, imageConfig, 0o644, "[jobs]\nauto_start = true\n")
		dir := assemble(t, "custopizer", "--apt-url", repoSrv.URL, "--keyring", repoSrv.KeyringGPG, "--config", imageConfig)
		for i := 0; i < 2; i++ {
			emulate(t, "custopizer", root, dir)
		}
		checkInstalled(t, root, version, true)
		// The maker's settings are a drop-in; the conffile stays the
		// package's, so no later upgrade stops at dpkg's conffile prompt.
		if got := readFile(t, filepath.Join(root, "etc/lmntd/lmntd.toml.d/10-image.toml")); got != "[jobs]\nauto_start = true\n" {
			t.Errorf("10-image.toml = %q", got)
		}
		if out := mustChroot(t, root, "dpkg", "--verify", "lmntd"); strings.TrimSpace(out) != "" {
			t.Errorf("dpkg --verify lmntd reports changed files (the conffile?):\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(root, "files")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("/files left behind (%v)", err)
		}
		checkSource(t, root, repoSrv.URL, "/usr/share/keyrings/lmntd-archive-keyring.gpg")
		got := readFile(t, filepath.Join(root, "etc/nginx/sites-available/mainsail"))
		include := "include /usr/share/lmntd/nginx/lmntd.conf;"
		if strings.Count(got, include) != 1 || !strings.Contains(got, "server {\n    # LMNT Marketplace printer agent (lmntd)\n    "+include+"\n") {
			t.Errorf("the mainsail site should include the lmntd routes once, inside server {}:\n%s", got)
		}
		if strings.Replace(got, "    # LMNT Marketplace printer agent (lmntd)\n    "+include+"\n", "", 1) != site {
			t.Errorf("the mainsail site changed beyond the include:\n%s", got)
		}
	})

	t.Run("armbian", func(t *testing.T) {
		t.Parallel()
		repoSrv := signedRepo(t)
		root := newRoot(t, "arm64")
		addKlipper(t, root, "biqu") // BTT's CB1 image runs Klipper as biqu
		armbianArgs := []string{"bookworm", "sunxi64", "bigtreetech-cb1", "no", "arm64"}
		// A userpatches tree Armbian has built once: it copied its template
		// customize-image.sh there, which assemble replaces.
		userpatches := filepath.Join(t.TempDir(), "userpatches")
		if err := os.MkdirAll(userpatches, 0o755); err != nil {
			t.Fatal(err)
		}
		emulate(t, "armbian", root, userpatches, armbianArgs...)
		mustRun(t, time.Minute, repo, filepath.Join(repo, "image", "assemble.sh"), "armbian", userpatches, "--deb", debAmd64, "--deb", debArm64,
			"--apt-url", repoSrv.URL, "--channel", "stable", "--keyring", repoSrv.KeyringASC)
		for i := 0; i < 2; i++ {
			emulate(t, "armbian", root, userpatches, armbianArgs...)
		}
		// The owner's own script is never overwritten.
		own := filepath.Join(t.TempDir(), "own")
		writeFile(t, filepath.Join(own, "customize-image.sh"), 0o755, "#!/bin/bash\napt-get install -y cowsay\n")
		if out, err := run(time.Minute, repo, filepath.Join(repo, "image", "assemble.sh"), "armbian", own, "--deb", debArm64); err == nil ||
			!strings.Contains(out, "has your own code") {
			t.Errorf("assemble replaced the owner's customize-image.sh (%v):\n%s", err, out)
		}
		checkInstalled(t, root, version, false)
		checkSource(t, root, repoSrv.URL, "/usr/share/keyrings/lmntd-archive-keyring.asc")
		// The configured source must verify with the armored key: updates
		// come through it after the image ships.
		var out string
		stage(t, "apt-get update of the lmntd source", func() {
			out = mustChroot(t, root, "apt-get", "update", "-q",
				"-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/lmntd.sources",
				"-o", "Dir::Etc::SourceParts=-", "-o", "APT::Get::List-Cleanup=0")
		})
		if strings.Contains(out, "NO_PUBKEY") || strings.Contains(out, "not signed") || strings.Contains(out, "W:") {
			t.Errorf("apt-get update of the lmntd source warned:\n%s", out)
		}
		policy := mustChroot(t, root, "apt-cache", "policy", "lmntd")
		if !strings.Contains(policy, repoSrv.URL+" stable/main arm64 Packages") {
			t.Errorf("apt does not see lmntd in the configured repository:\n%s", policy)
		}
	})
}

// checkSource verifies the deb822 apt source the glue wrote.
func checkSource(t *testing.T, root, url, keyring string) {
	t.Helper()
	want := "Types: deb\nURIs: " + url + "\nSuites: stable\nComponents: main\nSigned-By: " + keyring + "\n"
	got := readFile(t, filepath.Join(root, "etc/apt/sources.list.d/lmntd.sources"))
	if !strings.HasSuffix(got, want) {
		t.Errorf("lmntd.sources:\n%s\nwant it to end with:\n%s", got, want)
	}
	if fi, err := os.Stat(filepath.Join(root, keyring)); err != nil || fi.Mode().Perm() != 0o644 || fi.Size() == 0 {
		t.Errorf("keyring %s: %v %v", keyring, fi, err)
	}
}

// checkInstalled verifies what every glue must leave in an arm64 root.
func checkInstalled(t *testing.T, root, version string, proxySocket bool) {
	t.Helper()
	if got := mustChroot(t, root, "dpkg-query", "-W", "-f=${Status} ${Version}", "lmntd"); got != "install ok installed "+version {
		t.Errorf("dpkg-query lmntd: %q, want installed %s", got, version)
	}

	units := map[string]string{}
	for u, dir := range enabledUnits {
		units[u] = dir
	}
	// The optional sockets are wanted by sockets.target and by lmntd.service
	// (so a restarted lmntd starts them): both links, or neither.
	for _, dir := range []string{"sockets.target.wants", "lmntd.service.wants"} {
		link := filepath.Join(root, "etc/systemd/system", dir, "lmntd-proxy.socket")
		if proxySocket {
			if target, err := os.Readlink(link); err != nil || filepath.Base(target) != "lmntd-proxy.socket" {
				t.Errorf("%s/lmntd-proxy.socket: %q %v, want a link to the unit", dir, target, err)
			} else if _, err := os.Stat(filepath.Join(root, target)); err != nil {
				t.Errorf("%s/lmntd-proxy.socket points to %s, which does not exist in the root", dir, target)
			}
		} else if _, err := os.Lstat(link); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("lmntd-proxy.socket is enabled (%s) without an nginx site to use it (%v)", dir, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system", dir, "lmntd-http.socket")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("lmntd-http.socket (the LAN listener) is enabled (%s) in an image (%v)", dir, err)
		}
	}
	for u, dir := range units {
		target, err := os.Readlink(filepath.Join(root, "etc/systemd/system", dir, u))
		if err != nil {
			t.Errorf("%s is not enabled: %v", u, err)
			continue
		}
		if _, err := os.Stat(filepath.Join(root, target)); err != nil {
			t.Errorf("%s/%s points to %s, which does not exist in the root", dir, u, target)
		}
	}

	checkOverlay(t, root)

	if m := elfMachine(t, filepath.Join(root, "usr/bin/lmntd")); m != elf.EM_AARCH64 {
		t.Errorf("/usr/bin/lmntd is built for %v, want arm64", m)
	}
	var out string
	stage(t, "lmntd --version under qemu", func() { out = mustChroot(t, root, "lmntd", "--version") })
	if !strings.Contains(out, strings.SplitN(version, "~", 2)[0]) {
		t.Errorf("lmntd --version says %q, want version %s", out, version)
	}

	// Not paired and no daemon in a chroot: doctor reports that with exit
	// 1 (degraded) or 2 (broken), never a crash.
	var code int
	stage(t, "lmnt doctor --offline under qemu", func() { out, code = outputAndCode(t, root, "lmnt", "doctor", "--offline") })
	t.Logf("lmnt doctor --offline exited %d:\n%s", code, out)
	if code < 0 || code > 2 {
		t.Errorf("lmnt doctor --offline exited %d, want 0, 1 or 2:\n%s", code, out)
	}
	if !strings.Contains(out, "\nhealth: ") || strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("lmnt doctor --offline output is not a health report:\n%s", out)
	}
	// The package's configuration loads on the target; the only required
	// failure in a chroot is the daemon that is not running there.
	if !regexp.MustCompile(`(?m)^OK\s+config\b`).MatchString(out) {
		t.Errorf("lmnt doctor --offline does not report the installed configuration OK:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^FAIL\s+daemon \(required\)`).MatchString(out) {
		t.Errorf("lmnt doctor --offline should report the daemon as not running in a chroot:\n%s", out)
	}
}

// outputAndCode runs a command in root and returns its combined output and
// exit status (-1: killed by a signal, which under qemu includes SIGILL from
// a binary built for the wrong CPU).
func outputAndCode(t *testing.T, root string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
	cmd.Env = chrootEnv
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case ctx.Err() != nil:
		t.Fatalf("%s: timed out\n%s", strings.Join(args, " "), out)
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

// checkOverlay verifies every file and link of image/overlay is in root with
// the same content and mode.
func checkOverlay(t *testing.T, root string) {
	t.Helper()
	overlay := filepath.Join(repo, "image", "overlay")
	n := 0
	err := filepath.WalkDir(overlay, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(overlay, p)
		got := filepath.Join(root, rel)
		n++
		if d.Type()&fs.ModeSymlink != 0 {
			want, _ := os.Readlink(p)
			if have, err := os.Readlink(got); err != nil || have != want {
				t.Errorf("overlay link /%s: %q (%v), want -> %s", rel, have, err, want)
			}
			return nil
		}
		wantInfo, _ := d.Info()
		gotInfo, err := os.Stat(got)
		if err != nil {
			t.Errorf("overlay file /%s missing: %v", rel, err)
			return nil
		}
		if st, ok := gotInfo.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("overlay file /%s is not owned by root", rel)
		}
		if gotInfo.Mode().Perm() != wantInfo.Mode().Perm() {
			t.Errorf("overlay file /%s has mode %v, want %v", rel, gotInfo.Mode().Perm(), wantInfo.Mode().Perm())
		}
		if rel == "etc/default/lmntd-firstboot" {
			return nil // the glue fills in Klipper's user
		}
		if readFile(t, got) != readFile(t, p) {
			t.Errorf("overlay file /%s differs from image/overlay", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Fatalf("walked only %d overlay files: is image/overlay complete?", n)
	}
}

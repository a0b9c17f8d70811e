//go:build system

package system

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test GPG key lives only in a temporary GNUPGHOME for the length of the
// run: a fresh key per run, never committed.
var gpgState struct {
	once    sync.Once
	err     error
	home    string
	fpr     string
	keyring string // binary public keyring for apt's signed-by
}

func testKey(t *testing.T) (home, fpr, keyring string) {
	t.Helper()
	gpgState.once.Do(func() {
		// gpg-agent's socket path must stay short: not under t.TempDir.
		home, err := os.MkdirTemp("", "lmntd-gpg-")
		if err != nil {
			gpgState.err = err
			return
		}
		gpgState.home = home
		env := []string{"GNUPGHOME=" + home}
		if _, err := tryRun(t, cmdOpts{env: env, quiet: true}, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
			"--quick-gen-key", "lmntd test archive key <test@lmntd.invalid>", "ed25519", "sign", "1d"); err != nil {
			gpgState.err = err
			return
		}
		out, err := tryRun(t, cmdOpts{env: env, quiet: true}, "gpg", "--batch", "--with-colons", "--list-secret-keys")
		if err != nil {
			gpgState.err = err
			return
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Split(l, ":"); len(f) > 9 && f[0] == "fpr" {
				gpgState.fpr = f[9]
				break
			}
		}
		if gpgState.fpr == "" {
			gpgState.err = fmt.Errorf("no fingerprint in gpg's listing:\n%s", out)
			return
		}
		gpgState.keyring = filepath.Join(home, "lmntd-archive-keyring.gpg")
		_, gpgState.err = tryRun(t, cmdOpts{env: env, quiet: true}, "gpg", "--batch", "--yes", "--output", gpgState.keyring,
			"--export", gpgState.fpr)
	})
	if gpgState.err != nil {
		t.Fatalf("test GPG key: %v", gpgState.err)
	}
	return gpgState.home, gpgState.fpr, gpgState.keyring
}

func cleanupGPG() {
	if gpgState.home == "" {
		return
	}
	cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
	cmd.Env = append(os.Environ(), "GNUPGHOME="+gpgState.home)
	_ = cmd.Run()
	os.RemoveAll(gpgState.home)
}

// release is the goreleaser snapshot, built once per run.
type release struct {
	dist    string
	version string
	debs    map[string]string // Debian architecture -> .deb
}

var releaseState struct {
	once sync.Once
	rel  *release
	err  string
}

func snapshot(t *testing.T) *release {
	t.Helper()
	releaseState.once.Do(func() {
		done := stage(t, "goreleaser check + release --snapshot --clean (signed checksums)")
		defer done()
		goreleaser := tool(t, "goreleaser")
		home, fpr, _ := testKey(t)
		env := []string{"GNUPGHOME=" + home, "GPG_FINGERPRINT=" + fpr}
		if out, err := tryRun(t, cmdOpts{env: env, quiet: true}, goreleaser, "check"); err != nil {
			releaseState.err = fmt.Sprintf("goreleaser check: %v\n%s", err, out)
			return
		}
		if out, err := tryRun(t, cmdOpts{env: env, quiet: true, timeout: 15 * time.Minute}, goreleaser, "release", "--snapshot", "--clean"); err != nil {
			releaseState.err = fmt.Sprintf("goreleaser release --snapshot: %v\n%s", err, out)
			return
		}
		rel := &release{dist: filepath.Join(repoRoot, "dist"), debs: map[string]string{}}
		meta, err := os.ReadFile(filepath.Join(rel.dist, "metadata.json"))
		if err != nil {
			releaseState.err = err.Error()
			return
		}
		var m struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(meta, &m); err != nil || m.Version == "" {
			releaseState.err = fmt.Sprintf("dist/metadata.json has no version: %v", err)
			return
		}
		rel.version = m.Version
		debs, _ := filepath.Glob(filepath.Join(rel.dist, "*.deb"))
		for _, d := range debs {
			arch, err := tryRun(t, cmdOpts{quiet: true}, "dpkg-deb", "--field", d, "Architecture")
			if err != nil {
				releaseState.err = err.Error()
				return
			}
			rel.debs[strings.TrimSpace(arch)] = d
		}
		releaseState.rel = rel
	})
	if releaseState.rel == nil {
		t.Fatalf("the snapshot release failed: %s", releaseState.err)
	}
	return releaseState.rel
}

// TestRelease checks the snapshot: one .deb per architecture (a single armhf
// one, GOARM=6), the signed checksums, and the package's contents.
func TestRelease(t *testing.T) {
	rel := snapshot(t)
	defer stage(t, "release artifacts: checksums signature, .deb contents")()
	t.Logf("snapshot version %s", rel.version)
	for _, arch := range []string{"amd64", "arm64", "armhf"} {
		if rel.debs[arch] == "" {
			t.Errorf("no %s .deb in dist/ (have %v)", arch, rel.debs)
		}
	}
	if len(rel.debs) != 3 {
		t.Errorf("want exactly 3 .debs (one armhf for every Pi), have %v", rel.debs)
	}
	home, _, _ := testKey(t)
	run(t, cmdOpts{env: []string{"GNUPGHOME=" + home}, dir: rel.dist}, "gpg", "--batch", "--verify", "checksums.txt.sig", "checksums.txt")
	run(t, cmdOpts{dir: rel.dist, quiet: true}, "sha256sum", "--check", "--ignore-missing", "checksums.txt")

	deb := rel.debs["amd64"]
	contents := run(t, cmdOpts{quiet: true}, "dpkg-deb", "--contents", deb)
	for _, want := range []string{"./usr/bin/lmntd", "./usr/bin/lmnt", "./lib/systemd/system/lmntd.service",
		"./lib/systemd/system/lmntd.socket", "./lib/systemd/system/lmntd-klipper.socket", "./lib/systemd/system/lmntd-http.socket",
		"./usr/lib/sysusers.d/lmntd.conf", "./usr/lib/tmpfiles.d/lmntd.conf", "./etc/lmntd/lmntd.toml",
		"./usr/share/lmntd/klipper/encrypted_file_bridge.py", "./usr/share/lmntd/klipper/secure_print.py",
		"./usr/share/lmntd/nginx/lmntd.conf", "./usr/share/doc/lmntd/README.md",
		"./usr/share/doc/lmntd/copyright", "./usr/share/doc/lmntd/changelog.gz", "./usr/share/doc/lmntd/THIRD_PARTY_NOTICES.gz",
		"./usr/share/man/man8/lmntd.8.gz", "./usr/share/man/man1/lmnt.1.gz",
		"./usr/share/bash-completion/completions/lmnt", "./usr/share/bash-completion/completions/lmntd"} {
		if !strings.Contains(contents, want+"\n") && !strings.Contains(contents, want+" ") {
			t.Errorf("the .deb lacks %s", want)
		}
	}
	if strings.Contains(contents, "lmnt-marketsim") || strings.Contains(contents, "standin") {
		t.Error("the .deb ships a test tool")
	}
	control := t.TempDir()
	run(t, cmdOpts{quiet: true}, "dpkg-deb", "--control", deb, control)
	conffiles, _ := os.ReadFile(filepath.Join(control, "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/lmntd/lmntd.toml" {
		t.Errorf("conffiles = %q, want /etc/lmntd/lmntd.toml only", conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(control, s)); err != nil {
			t.Errorf("maintainer script %s missing: %v", s, err)
		}
	}
	// goreleaser v2.15.1 writes the baseline GOAMD64=v1 as
	// Architecture-Variant (lintian-overrides says why it stays); anything
	// but the baseline would make the package refuse older CPUs.
	if v := strings.TrimSpace(run(t, cmdOpts{quiet: true}, "dpkg-deb", "--field", deb, "Architecture-Variant")); v != "" && v != "amd64v1" {
		t.Errorf("the amd64 .deb is built for %s, not the amd64 baseline", v)
	}
	triggers, _ := os.ReadFile(filepath.Join(control, "triggers"))
	if !strings.Contains(string(triggers), "interest-noawait /lib/udev/rules.d/60-tpm-udev.rules") {
		t.Errorf("no trigger on tpm-udev's rule (group tss for the TPM):\n%s", triggers)
	}
	// Every tarball carries the licence and the third-party notices.
	tarballs, _ := filepath.Glob(filepath.Join(rel.dist, "*.tar.gz"))
	for _, tb := range tarballs {
		list := run(t, cmdOpts{quiet: true}, "tar", "-tzf", tb)
		for _, want := range []string{"LICENSE", "THIRD_PARTY_NOTICES", "man/lmntd.8.gz", "completion/lmnt"} {
			if !strings.Contains("\n"+list, "\n"+want+"\n") {
				t.Errorf("%s lacks %s:\n%s", filepath.Base(tb), want, list)
			}
		}
	}
	fields := run(t, cmdOpts{quiet: true}, "dpkg-deb", "--field", deb, "Depends", "Version")
	t.Logf("control fields:\n%s", fields)
	if !strings.Contains(fields, "acl") || !strings.Contains(fields, "systemd") {
		t.Errorf("Depends lacks acl or systemd: %s", fields)
	}
}

// TestCrossArchBinaries runs the armhf build on the oldest Pi core (ARMv6,
// arm1176: Pi Zero and 1) and the arm64 build, under qemu-user.
func TestCrossArchBinaries(t *testing.T) {
	rel := snapshot(t)
	defer stage(t, "qemu-arm-static -cpu arm1176 / qemu-aarch64-static --version")()
	for _, c := range []struct {
		dir     string
		qemu    []string
		version string // how the program prints its version
	}{
		{"lmntd_linux_arm_6", []string{"qemu-arm-static", "-cpu", "arm1176"}, "--version"},
		{"lmnt_linux_arm_6", []string{"qemu-arm-static", "-cpu", "arm1176"}, "version"},
		{"lmntd_linux_arm64_v8.0", []string{"qemu-aarch64-static"}, "--version"},
		{"lmnt_linux_arm64_v8.0", []string{"qemu-aarch64-static"}, "version"},
	} {
		bin := filepath.Join(rel.dist, c.dir, strings.SplitN(c.dir, "_", 2)[0])
		args := append(c.qemu[1:], bin, c.version)
		out := run(t, cmdOpts{timeout: time.Minute}, c.qemu[0], args...)
		if !strings.Contains(out, rel.version) {
			t.Errorf("%s --version = %q, want the snapshot version %s", c.dir, out, rel.version)
		}
	}
}

// TestLintian runs Debian's lintian on every .deb of the snapshot: no error,
// no warning that is not overridden, and every override in the package
// carries a reason (a comment line right above it).
func TestLintian(t *testing.T) {
	rel := snapshot(t)
	defer stage(t, "lintian on every .deb")()
	var debs []string
	for _, d := range rel.debs {
		debs = append(debs, d)
	}
	// Not --show-overrides: lintian 2.116 then counts the overridden tags
	// toward --fail-on.
	out, err := tryRun(t, cmdOpts{timeout: 10 * time.Minute}, "lintian", append([]string{"--allow-root", "--fail-on", "error,warning",
		"--display-level", ">=info", "--tag-display-limit", "0"}, debs...)...)
	if err != nil {
		t.Errorf("lintian found errors or warnings that are not overridden (%v):\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
			t.Errorf("lintian: %s", l)
		}
	}
	overrides, err := os.ReadFile(filepath.Join(repoRoot, "packaging/deb/lintian-overrides"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(overrides)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "lmntd: ") && (i == 0 || !strings.HasPrefix(lines[i-1], "# ")) {
			t.Errorf("lintian override %q has no reason on the line above it", l)
		}
	}
	contents := run(t, cmdOpts{quiet: true}, "dpkg-deb", "--contents", rel.debs["amd64"])
	if !strings.Contains(contents, "./usr/share/lintian/overrides/lmntd") {
		t.Error("the .deb does not ship its lintian overrides")
	}
}

// TestReproducibleBuild builds the snapshot a second time from the same
// commit into another directory: every tarball, .deb and SBOM must have the
// same SHA-256 as the first build's.
func TestReproducibleBuild(t *testing.T) {
	rel := snapshot(t)
	defer stage(t, "second snapshot build: byte-identical artifacts")()
	goreleaser := tool(t, "goreleaser")
	second := t.TempDir()
	config := filepath.Join(t.TempDir(), "goreleaser.yaml")
	base, err := os.ReadFile(filepath.Join(repoRoot, "goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, config, string(base)+"\ndist: "+filepath.Join(second, "dist")+"\n", 0o644)
	run(t, cmdOpts{quiet: true, timeout: 15 * time.Minute}, goreleaser, "release", "--snapshot", "--clean", "--skip=sign", "--config", config)
	var compared int
	for _, pattern := range []string{"*.tar.gz", "*.deb", "*.cdx.json"} {
		first, _ := filepath.Glob(filepath.Join(rel.dist, pattern))
		if len(first) == 0 {
			t.Errorf("the first build has no %s", pattern)
		}
		for _, a := range first {
			b := filepath.Join(second, "dist", filepath.Base(a))
			sa, sb := sha256File(t, a), sha256File(t, b)
			if sa != sb {
				t.Errorf("%s differs between two builds of one commit: %s vs %s", filepath.Base(a), sa, sb)
			}
			compared++
		}
	}
	t.Logf("%d artifacts byte-identical across two builds", compared)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	out, err := tryRun(t, cmdOpts{quiet: true}, "sha256sum", path)
	if err != nil {
		return "missing (" + err.Error() + ")"
	}
	return strings.Fields(out)[0]
}

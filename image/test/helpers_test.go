//go:build system

package imagetest

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repo is the repository root (tests run in image/test).
var repo = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "image tests need root: they debootstrap, chroot and boot containers (run `make test-image` as root)")
		os.Exit(1)
	}
	code := m.Run()
	if repoVal != nil {
		repoVal.srv.Close()
		os.RemoveAll(repoVal.dir)
	}
	os.Exit(code)
}

// run runs a command with a deadline and returns its combined output; a
// non-zero exit is an error that carries the output.
func run(timeout time.Duration, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s %s: timed out after %s\n%s", name, strings.Join(args, " "), timeout, out)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func mustRun(t *testing.T, timeout time.Duration, dir, name string, args ...string) string {
	t.Helper()
	out, err := run(timeout, dir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stage runs f and logs how long it took: the report wants each stage's time.
func stage(t *testing.T, name string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	t.Logf("timing: %-44s %6.1fs", name, time.Since(start).Seconds())
}

// debFor is the lmntd .deb for arch in $IMAGE_TEST_DEB_DIR (default dist/, where
// goreleaser puts it).
func debFor(t *testing.T, arch string) string {
	t.Helper()
	dir := os.Getenv("IMAGE_TEST_DEB_DIR")
	if dir == "" {
		dir = filepath.Join(repo, "dist")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "lmntd_*_"+arch+".deb"))
	if len(matches) != 1 {
		t.Fatalf("want exactly one lmntd_*_%s.deb in %s, found %d: build it first (make test-image does: goreleaser release --snapshot --clean --skip=sign)", arch, dir, len(matches))
	}
	return matches[0]
}

func debVersion(t *testing.T, deb string) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, time.Minute, "", "dpkg-deb", "--field", deb, "Version"))
}

// newRoot makes a fresh Debian 12 root for arch through scripts/rootfs.sh
// (debootstrapped once, then unpacked from its cache).
func newRoot(t *testing.T, arch string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	stage(t, "rootfs "+arch, func() {
		mustRun(t, 20*time.Minute, repo, filepath.Join(repo, "scripts", "rootfs.sh"), arch, root)
	})
	return root
}

// assemble runs image/assemble.sh for builder into a new directory.
func assemble(t *testing.T, builder string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), builder)
	mustRun(t, time.Minute, repo, filepath.Join(repo, "image", "assemble.sh"), append([]string{builder, out}, args...)...)
	return out
}

// emulate runs a drop-in against root the way its builder does.
func emulate(t *testing.T, builder, root, dir string, extra ...string) string {
	t.Helper()
	var out string
	stage(t, "glue "+builder, func() {
		out = mustRun(t, 10*time.Minute, repo, filepath.Join(repo, "image", "test", "emulate.sh"),
			append([]string{builder, root, dir}, extra...)...)
	})
	return out
}

// chrootEnv is the environment of commands run inside a root: what a
// login shell on the printer would have, none of the test's own variables
// (lmntd's config rejects LMNTD_* variables it does not know).
var chrootEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C"}

// chroot runs a command inside root (under qemu-user for a foreign root).
func chroot(timeout time.Duration, root string, args ...string) (string, error) {
	return run(timeout, "", "env", append(append([]string{"-i"}, chrootEnv...), append([]string{"chroot", root}, args...)...)...)
}

func mustChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := chroot(5*time.Minute, root, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path string, mode fs.FileMode, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// passwdEntry looks a user up in root's /etc/passwd.
func passwdEntry(t *testing.T, root, user string) (uid, gid int, home string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == user {
			uid, _ = strconv.Atoi(fields[2])
			gid, _ = strconv.Atoi(fields[3])
			return uid, gid, fields[5]
		}
	}
	t.Fatalf("no user %s in %s/etc/passwd", user, root)
	return 0, 0, ""
}

// groupMembers lists the members of group in root's /etc/group.
func groupMembers(t *testing.T, root, group string) []string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, filepath.Join(root, "etc", "group")), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) == 4 && fields[0] == group {
			if fields[3] == "" {
				return nil
			}
			return strings.Split(fields[3], ",")
		}
	}
	t.Fatalf("no group %s in %s/etc/group", group, root)
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// addKlipper creates user and a Klipper installation laid out the way
// MainsailOS and KIAUH do (0700 home, printer_data, klipper.service reading
// klipper.env), so `lmnt setup` finds it. The unit is not enabled: there is
// no Klipper to run.
func addKlipper(t *testing.T, root, user string) {
	t.Helper()
	mustChroot(t, root, "useradd", "--create-home", "--user-group", "--shell", "/bin/bash", user)
	uid, gid, home := passwdEntry(t, root, user)
	h := filepath.Join(root, home)
	if err := os.Chmod(h, 0o700); err != nil {
		t.Fatal(err)
	}
	data := home + "/printer_data"
	files := map[string]string{
		"printer_data/config/printer.cfg":    "[include mainsail.cfg]\n\n[mcu]\nserial: /dev/serial/by-id/usb-Klipper_stm32-if00\n\n[printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\n",
		"printer_data/config/mainsail.cfg":   "[virtual_sdcard]\npath: ~/printer_data/gcodes\non_error_gcode: CANCEL_PRINT\n\n[pause_resume]\n\n[display_status]\n",
		"printer_data/config/moonraker.conf": "[server]\nhost: 0.0.0.0\n",
		"printer_data/moonraker.asvc":        "klipper_mcu\nwebcamd\ncrowsnest\n",
		"printer_data/systemd/klipper.env": fmt.Sprintf("KLIPPER_ARGS=\"%[1]s/klipper/klippy/klippy.py %[2]s/config/printer.cfg -I %[2]s/comms/klippy.serial -l %[2]s/logs/klippy.log -a %[2]s/comms/klippy.sock\"\n",
			home, data),
		"klipper/klippy/klippy.py": "# stands in for Klipper; never run\n",
	}
	for rel, content := range files {
		writeFile(t, filepath.Join(h, rel), 0o644, content)
	}
	for _, d := range []string{"printer_data/gcodes", "printer_data/logs", "printer_data/comms", "klipper/klippy/extras", "klippy-env/bin"} {
		if err := os.MkdirAll(filepath.Join(h, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(h, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/systemd/system/klipper.service"), 0o644, fmt.Sprintf(`[Unit]
Description=Klipper 3D Printer Firmware SV1
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=simple
User=%[1]s
EnvironmentFile=%[2]s/systemd/klipper.env
ExecStart=%[3]s/klippy-env/bin/python $KLIPPER_ARGS
Restart=always
`, user, data, home))
}

// elfMachine reads the machine a binary in root was built for.
func elfMachine(t *testing.T, path string) elf.Machine {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}

// aptRepo is a signed lmntd apt repository (packaging/apt/make-repo.sh)
// served over loopback, and its public key in both forms apt accepts.
type aptRepo struct {
	URL                    string
	KeyringGPG, KeyringASC string
	srv                    *httptest.Server
	dir                    string
}

var (
	repoOnce sync.Once
	repoVal  *aptRepo
	repoErr  error
)

// signedRepo builds the repository once per test binary from the amd64 and
// arm64 .debs, with a throwaway key. The chroots share the host's network,
// so apt inside them reaches the loopback server.
func signedRepo(t *testing.T) *aptRepo {
	t.Helper()
	debs := []string{debFor(t, "amd64"), debFor(t, "arm64")}
	repoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lmntd-image-repo-")
		if err != nil {
			repoErr = err
			return
		}
		gnupg := filepath.Join(dir, "gnupg")
		if err := os.Mkdir(gnupg, 0o700); err != nil {
			repoErr = err
			return
		}
		steps := [][]string{
			{"gpg", "--homedir", gnupg, "--batch", "--passphrase", "", "--quick-gen-key", "lmntd image test <image-test@invalid>", "ed25519", "sign", "never"},
		}
		for _, s := range steps {
			if _, repoErr = run(time.Minute, dir, s[0], s[1:]...); repoErr != nil {
				return
			}
		}
		var fpr string
		out, err := run(time.Minute, dir, "gpg", "--homedir", gnupg, "--batch", "--with-colons", "--list-secret-keys")
		if err != nil {
			repoErr = err
			return
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
				fpr = f[9]
				break
			}
		}
		if fpr == "" {
			repoErr = errors.New("no fingerprint for the generated repository key")
			return
		}
		www := filepath.Join(dir, "www")
		args := append([]string{"--out", www, "--channel", "stable", "--key", fpr, "--gnupghome", gnupg}, debs...)
		if _, repoErr = run(2*time.Minute, repo, filepath.Join(repo, "packaging", "apt", "make-repo.sh"), args...); repoErr != nil {
			return
		}
		r := &aptRepo{dir: dir, KeyringGPG: filepath.Join(dir, "lmntd.gpg"), KeyringASC: filepath.Join(dir, "lmntd.asc")}
		if _, repoErr = run(time.Minute, dir, "gpg", "--homedir", gnupg, "--batch", "--yes", "--output", r.KeyringGPG, "--export", fpr); repoErr != nil {
			return
		}
		if _, repoErr = run(time.Minute, dir, "gpg", "--homedir", gnupg, "--batch", "--yes", "--armor", "--output", r.KeyringASC, "--export", fpr); repoErr != nil {
			return
		}
		srv := httptest.NewServer(http.FileServer(http.Dir(www)))
		r.URL, r.srv = srv.URL, srv
		repoVal = r
	})
	if repoErr != nil {
		t.Fatal(repoErr)
	}
	return repoVal
}

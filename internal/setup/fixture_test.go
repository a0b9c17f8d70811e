package setup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// Fixture hosts: temp trees laid out like real printers. They use real
// owners and modes (the tests run as root), so the ACL steps act on a real
// 0700 home directory.

const (
	uidLmntd = 64901 // lmntd's system user on the fixture hosts
	gidLmntd = 64901
	gidLmnt  = 64902
	uidPi    = 64910 // MainsailOS "pi"
	uidBiqu  = 64911 // BTT CB1 "biqu"
)

type host struct {
	t    *testing.T
	root string
}

func newHost(t *testing.T) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests need root: they create files owned by other users and set ACLs (run make test as root)")
	}
	h := &host{t: t, root: t.TempDir()}
	// t.TempDir and its parent are 0700 root: make the root traversable
	// like "/" so only the tree's own modes and ACLs decide.
	for _, d := range []string{filepath.Dir(h.root), h.root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.write("etc/passwd", 0o644, 0, 0, fmt.Sprintf(`root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
lmntd:x:%d:%d:LMNT Marketplace printer agent:/var/lib/lmntd:/usr/sbin/nologin
pi:x:%d:%d:,,,:/home/pi:/bin/bash
biqu:x:%d:%d:,,,:/home/biqu:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`, uidLmntd, gidLmntd, uidPi, uidPi, uidBiqu, uidBiqu))
	h.write("etc/group", 0o644, 0, 0, fmt.Sprintf(`root:x:0:
dialout:x:20:pi,biqu
lmntd:x:%d:
lmnt:x:%d:lmntd
pi:x:%d:
biqu:x:%d:
`, gidLmntd, gidLmnt, uidPi, uidBiqu))
	h.write("etc/gshadow", 0o640, 0, 0, `root:*::
dialout:*::pi,biqu
lmntd:!::
lmnt:!::lmntd
pi:!::
biqu:!::
`)
	for _, e := range Extras {
		h.write("usr/share/lmntd/klipper/"+e, 0o644, 0, 0, "# the lmntd extra "+e+"\n")
	}
	h.write("etc/lmntd/lmntd.toml", 0o644, 0, 0, shippedConfig(t))
	for _, u := range []string{"lmntd@.socket", "lmntd-klipper@.socket"} {
		unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		h.write("lib/systemd/system/"+u, 0o644, 0, 0, string(unit))
	}
	return h
}

// shippedConfig is the package's lmntd.toml.
func shippedConfig(t *testing.T) string {
	t.Helper()
	toml, err := os.ReadFile(filepath.Join("..", "..", "packaging", "lmntd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(toml)
}

func (h *host) path(rel string) string { return filepath.Join(h.root, rel) }

// write creates rel (and its missing parents, owned like the file) with mode.
func (h *host) write(rel string, mode fs.FileMode, uid, gid int, content string) {
	h.t.Helper()
	h.mkdir(filepath.Dir(rel), 0o755, uid, gid)
	p := h.path(rel)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chown(p, uid, gid); err != nil {
		h.t.Fatal(err)
	}
}

// mkdir creates rel and missing parents; new directories under home/ get
// the given owner, others root.
func (h *host) mkdir(rel string, mode fs.FileMode, uid, gid int) {
	h.t.Helper()
	if rel == "." || rel == "" {
		return
	}
	p := h.path(rel)
	if _, err := os.Stat(p); err == nil {
		return
	}
	h.mkdir(filepath.Dir(rel), 0o755, uid, gid)
	if err := os.Mkdir(p, mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		h.t.Fatal(err)
	}
	owner, group := uid, gid
	if !strings.HasPrefix(rel, "home/") || strings.Count(rel, "/") == 0 {
		owner, group = 0, 0
	}
	if err := os.Chown(p, owner, group); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) read(rel string) string {
	h.t.Helper()
	b, err := os.ReadFile(h.path(rel))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

const samplePrinterCfg = `# BIGTREETECH SKR mini E3 v3 (MainsailOS sample)
[include mainsail.cfg]

[mcu]
serial: /dev/serial/by-id/usb-Klipper_stm32g0b1xx_190028000D50415833323520-if00

[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 3000

[stepper_z]
position_max: 250

#*# <---------------------- SAVE_CONFIG ---------------------->
#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.
#*#
#*# [bltouch]
#*# z_offset = 1.985
`

const mainsailCfg = `[virtual_sdcard]
path: ~/printer_data/gcodes
on_error_gcode: CANCEL_PRINT

[pause_resume]

[display_status]
`

// Moonraker's default allowed services.
const defaultASVC = `klipper_mcu
webcamd
MoonCord
KlipperScreen
moonraker-telegram-bot
moonraker-obico
sonar
crowsnest
octoeverywhere
ratos-configurator
`

// addPrinterData lays out one printer_data instance in user's 0700 home.
func (h *host) addPrinterData(user string, uid int, dataDir string) {
	home := "home/" + user
	h.mkdir(home, 0o700, uid, uid)
	base := home + "/" + dataDir
	for _, d := range []string{"config", "gcodes", "logs", "comms", "systemd", "database"} {
		h.mkdir(base+"/"+d, 0o755, uid, uid)
	}
	h.write(base+"/config/printer.cfg", 0o644, uid, uid, samplePrinterCfg)
	h.write(base+"/config/mainsail.cfg", 0o644, uid, uid, strings.ReplaceAll(mainsailCfg, "printer_data", dataDir))
	h.write(base+"/config/moonraker.conf", 0o644, uid, uid, "[server]\nhost: 0.0.0.0\n")
	h.write(base+"/moonraker.asvc", 0o644, uid, uid, defaultASVC)
	h.write(base+"/systemd/klipper.env", 0o644, uid, uid, fmt.Sprintf(
		`KLIPPER_ARGS="/home/%[1]s/klipper/klippy/klippy.py /home/%[1]s/%[2]s/config/printer.cfg -I /home/%[1]s/%[2]s/comms/klippy.serial -l /home/%[1]s/%[2]s/logs/klippy.log -a /home/%[1]s/%[2]s/comms/klippy.sock"
`, user, dataDir))
	h.mkdir(home+"/klipper/klippy/extras", 0o755, uid, uid)
	h.write(home+"/klipper/klippy/klippy.py", 0o644, uid, uid, "# klippy\n")
}

// klipperUnit is the unit KIAUH and MainsailOS install.
func klipperUnit(user, dataDir string) string {
	return fmt.Sprintf(`[Unit]
Description=Klipper 3D Printer Firmware SV1
Documentation=https://www.klipper3d.org/
After=network-online.target
Wants=udev.target

[Install]
WantedBy=multi-user.target

[Service]
Type=simple
User=%[1]s
RemainAfterExit=yes
WorkingDirectory=/home/%[1]s/klipper
EnvironmentFile=/home/%[1]s/%[2]s/systemd/klipper.env
ExecStart=/home/%[1]s/klippy-env/bin/python $KLIPPER_ARGS
Restart=always
RestartSec=10
`, user, dataDir)
}

// mainsailOS is a MainsailOS image: user pi, one klipper.service.
func mainsailOS(t *testing.T) *host {
	h := newHost(t)
	h.addPrinterData("pi", uidPi, "printer_data")
	h.write("etc/systemd/system/klipper.service", 0o644, 0, 0, klipperUnit("pi", "printer_data"))
	h.write("etc/systemd/system/klipper-mcu.service", 0o644, 0, 0, `[Service]
Type=simple
ExecStart=/usr/local/bin/klipper_mcu -r -I /tmp/klipper_host_mcu
`)
	return h
}

// kiauhTwo is a KIAUH install with two instances for user biqu.
func kiauhTwo(t *testing.T) *host {
	h := newHost(t)
	for _, n := range []string{"printer_1", "printer_2"} {
		h.addPrinterData("biqu", uidBiqu, n+"_data")
		h.write("etc/systemd/system/klipper-"+n+".service", 0o644, 0, 0, klipperUnit("biqu", n+"_data"))
	}
	return h
}

// entry is one file of a tree snapshot.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	sum      string // content hash or link target
	acl      string
}

// snapshot records every file of the tree with owner, mode, content and ACL.
func (h *host) snapshot() map[string]entry {
	h.t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(h.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		e := entry{mode: st.Mode(), uid: sys.Uid, gid: sys.Gid}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			e.sum, _ = os.Readlink(p)
		case st.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			e.sum = hex.EncodeToString(s[:])
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			out, err := exec.Command("getfacl", "-c", "-p", "-n", "--", p).Output()
			if err != nil {
				return err
			}
			e.acl = string(out)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// diffSnapshots lists the paths that differ.
func diffSnapshots(a, b map[string]entry) []string {
	var out []string
	for k, va := range a {
		if vb, ok := b[k]; !ok {
			out = append(out, "removed "+k)
		} else if va != vb {
			out = append(out, fmt.Sprintf("changed %s: %+v -> %+v", k, va, vb))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "added "+k)
		}
	}
	sort.Strings(out)
	return out
}

// canRead reports whether uid (with no supplementary groups) can read a file
// of the tree: the kernel decides, through setpriv.
func (h *host) canRead(uid int, rel string) (bool, string) {
	h.t.Helper()
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"cat", "--", h.path(rel))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return err == nil, strings.TrimSpace(stderr.String())
}

package setup

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// writeAs creates a file as uid (no supplementary groups): the kernel
// decides through setpriv, ACLs included.
func writeAs(h *host, uid, gid int, rel string) error {
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid), "--clear-groups",
		"sh", "-c", `mkdir -p "$(dirname "$1")" && echo x > "$1"`, "sh", h.path(rel))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestStubFolder(t *testing.T) {
	h := mainsailOS(t)
	run(t, h, Options{})
	folder := "home/pi/printer_data/gcodes/.lmnt"
	st, err := os.Lstat(h.path(folder))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&(fs.ModeSetgid|fs.ModePerm) != fs.ModeSetgid|0o770 {
		t.Errorf("mode %v", st.Mode())
	}
	if uid, gid := ownerOf(st); uid != uidLmntd || gid != uidPi {
		t.Errorf("owner %d:%d, want lmntd:pi's group", uid, gid)
	}
	// lmntd writes its stubs; Moonraker (as pi) makes .thumbs inside and
	// lmntd can read what lands there; others get nothing.
	if err := writeAs(h, uidLmntd, uidLmntd, folder+"/Benchy.gcode"); err != nil {
		t.Fatalf("lmntd cannot write a stub: %v", err)
	}
	if ok, msg := h.canRead(uidPi, folder+"/Benchy.gcode"); !ok {
		t.Errorf("Klipper's user cannot read a stub: %s", msg)
	}
	if err := writeAs(h, uidPi, uidPi, folder+"/.thumbs/Benchy-32x32.png"); err != nil {
		t.Fatalf("Moonraker cannot write its thumbnails: %v", err)
	}
	if err := writeAs(h, 65534, 65534, folder+"/x.gcode"); err == nil {
		t.Error("another user can write into the stub folder")
	}
	if err := writeAs(h, uidLmntd, uidLmntd, "home/pi/printer_data/gcodes/other.gcode"); err == nil {
		t.Error("lmntd can write beside the stub folder")
	}
	if d := h.read(DropInFile); !strings.Contains(d, "\nBindPaths=-/home/pi/printer_data/gcodes/.lmnt\n") {
		t.Errorf("drop-in:\n%s", d)
	}
	if c := h.read(ConfigFile); !strings.Contains(c, `gcodes_dir = "/home/pi/printer_data/gcodes"`) {
		t.Errorf("lmntd.toml:\n%s", c)
	}
	os.Remove(h.path(folder + "/Benchy.gcode"))
	remove(t, h, Options{})
	if _, err := os.Lstat(h.path(folder)); !os.IsNotExist(err) {
		t.Errorf("--remove left the stub folder: %v", err)
	}
}

package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

func TestTPMAccessCheck(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "tpmrm0")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := TPMAccess("auto", filepath.Join(dir, "missing")); ok {
		t.Error("a board without a TPM got a TPM check")
	}
	if _, ok := TPMAccess("software", dev); ok {
		t.Error("the software backend got a TPM check")
	}
	if c, ok := TPMAccess("auto", dev); !ok || c.Result != apitype.CheckOK {
		t.Errorf("an openable device: %+v %v", c, ok)
	}
	// A device that exists but does not open (a directory stands in for
	// a node without group tss: opening it for writing fails).
	c, ok := TPMAccess("tpm", dir)
	if !ok || c.Result != apitype.CheckWarn || c.Required || !strings.Contains(c.Fix, "usermod -a -G tss lmntd") || !strings.Contains(c.Detail, "cannot open") {
		t.Errorf("an unopenable device: %+v %v", c, ok)
	}
}

// Local is what lmnt doctor shows when lmntd does not answer: the checks
// that need no daemon, in the daemon's words, and the daemon as a failed
// required check (broken).
func TestLocal(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "lmntd.toml")
	printerCfg := filepath.Join(dir, "printer.cfg")
	if err := os.WriteFile(printerCfg, []byte("[virtual_sdcard]\npath: /tmp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte("[klipper]\nconfig_file = \""+printerCfg+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	down := errors.New("lmntd is not running")
	r := Local(cfgFile, down)
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if r.Health != apitype.HealthBroken || len(names) < 4 || names[0] != "config" || names[len(names)-1] != "daemon" ||
		!slices.Contains(names, "klipper config") || !slices.Contains(names, "job compatibility") {
		t.Fatalf("local report: %s %v", r.Health, names)
	}
	if c := r.Checks[0]; c.Result != apitype.CheckOK || !strings.HasPrefix(c.Detail, "loaded from "+cfgFile) {
		t.Errorf("config check: %+v", c)
	}
	if c := r.Checks[len(r.Checks)-1]; c.Result != apitype.CheckFail || !c.Required || c.Detail != down.Error() {
		t.Errorf("daemon check: %+v", c)
	}

	// A configuration that does not load is the failed config check.
	r = Local(filepath.Join(dir, "missing.toml"), down)
	if r.Health != apitype.HealthBroken || r.Checks[0].Name != "config" || r.Checks[0].Result != apitype.CheckFail ||
		!strings.Contains(r.Checks[0].Detail, "missing.toml") {
		t.Errorf("unloadable config: %+v", r.Checks)
	}
}

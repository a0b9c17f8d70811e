package doctor

import (
	"os"
	"path/filepath"
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

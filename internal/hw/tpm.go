package hw

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TPM describes the TPM the kernel registered, as sysfs shows it.
type TPM struct {
	// Present is true when the kernel registered a TPM device (tpm0).
	Present bool
	// Version is the TPM major version (2 for TPM 2.0; 1 for TPM 1.2, which
	// lmntd cannot use); 0 when unknown.
	Version int
	// Driver is the kernel driver bound to it (tpm_tis_spi for SPI modules
	// such as the Infineon SLB9670, tpm_crb or tpm_tis on x86); empty if unknown.
	Driver string
	// Devices are the character devices to try, in order: the in-kernel
	// resource manager /dev/tpmrm0 first (safe to share with other users),
	// then the raw /dev/tpm0. Paths are resolved under Paths.Root.
	Devices []string
}

// Usable reports whether lmntd can seal with this TPM.
func (t TPM) Usable() bool { return t.Present && t.Version == 2 && len(t.Devices) > 0 }

// DetectTPM reads /sys/class/tpm and /sys/class/tpmrm. It does not open the
// device (that needs the service's device access); internal/seal probes it.
func DetectTPM(p Paths) TPM {
	var t TPM
	classDir := p.Path("sys/class/tpm/tpm0")
	if _, err := os.Stat(classDir); err != nil {
		return t
	}
	t.Present = true
	if b, err := os.ReadFile(filepath.Join(classDir, "tpm_version_major")); err == nil {
		t.Version, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if target, err := os.Readlink(filepath.Join(classDir, "device", "driver")); err == nil {
		t.Driver = filepath.Base(target)
	}
	// The kernel creates tpmrm0 only for TPM 2.0 devices.
	if _, err := os.Stat(p.Path("sys/class/tpmrm/tpmrm0")); err == nil {
		t.Devices = append(t.Devices, p.Path("dev/tpmrm0"))
	}
	t.Devices = append(t.Devices, p.Path("dev/tpm0"))
	return t
}

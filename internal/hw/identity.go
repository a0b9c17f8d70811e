package hw

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// SourceName names one identity source. The names are stored in sealed blobs
// (internal/seal records which sources a key was bound to), so they never change.
type SourceName string

// Identity sources, from most to least bound to the physical board.
const (
	// SourceDeviceTreeSerial is /proc/device-tree/serial-number: set by the
	// Raspberry Pi firmware from the SoC OTP, and by U-Boot on Allwinner and
	// Rockchip boards from the SoC's unique ID.
	SourceDeviceTreeSerial SourceName = "devicetree-serial-number"
	// SourceCPUInfoSerial is the "Serial" line of /proc/cpuinfo (Raspberry Pi
	// kernels; the same OTP value as the device-tree serial).
	SourceCPUInfoSerial SourceName = "cpuinfo-serial"
	// SourceSunxiSID is the Allwinner SoC's security ID (chip ID, first 16
	// bytes of the SID nvmem), unique per chip.
	SourceSunxiSID SourceName = "sunxi-sid"
	// SourceDMIProductUUID is the SMBIOS system UUID (x86; readable by root only
	// unless the image grants access).
	SourceDMIProductUUID SourceName = "dmi-product-uuid"
	// SourceMachineID is /etc/machine-id. It lives on the root filesystem, so it
	// identifies the installation, not the board: a copied SD card carries it along.
	SourceMachineID SourceName = "machine-id"
)

// HardwareBound reports whether the source identifies the board itself
// (survives reinstalling, does not travel with the SD card).
func (n SourceName) HardwareBound() bool { return n != SourceMachineID }

// ErrSourceAbsent means the identity source does not exist on this host.
var ErrSourceAbsent = errors.New("identity source not present on this host")

// ErrSourcePlaceholder means the source exists but holds a value shared by
// many machines (all zeros, a vendor's placeholder UUID), so it identifies nothing.
var ErrSourcePlaceholder = errors.New("identity source holds a placeholder value")

// IdentitySource is one readable identity value. Value is not secret, but it is
// not for logs either (a board serial is a tracking identifier): log Name only.
type IdentitySource struct {
	Name  SourceName
	Value []byte
}

// IdentitySources lists the sources worth reading on this board, in order of
// preference: the SoC-unique ones first, machine-id last.
func (b Board) IdentitySources() []SourceName {
	switch {
	case b.Family == FamilyRaspberryPi || b.SoCVendor == SoCBroadcom:
		return []SourceName{SourceDeviceTreeSerial, SourceCPUInfoSerial, SourceMachineID}
	case b.SoCVendor == SoCAllwinner:
		return []SourceName{SourceSunxiSID, SourceDeviceTreeSerial, SourceMachineID}
	case b.SoCVendor == SoCIntelAMD:
		return []SourceName{SourceDMIProductUUID, SourceMachineID}
	case len(b.Compatible) > 0:
		return []SourceName{SourceDeviceTreeSerial, SourceMachineID}
	default:
		return []SourceName{SourceDMIProductUUID, SourceDeviceTreeSerial, SourceMachineID}
	}
}

// ReadIdentity reads every source of b.IdentitySources(). Sources that could
// not be read are returned in problems (each wrapping ErrSourceAbsent,
// ErrSourcePlaceholder or the read error, e.g. fs.ErrPermission), so callers
// can say why a board-unique source was not used.
func ReadIdentity(p Paths, b Board) (found []IdentitySource, problems []error) {
	for _, name := range b.IdentitySources() {
		v, err := ReadIdentitySource(p, name)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		found = append(found, IdentitySource{Name: name, Value: v})
	}
	return found, problems
}

// ReadIdentitySource reads one source and normalises it (trimmed, lower-case
// hex where the source is hex) so the same board always yields the same bytes.
func ReadIdentitySource(p Paths, name SourceName) ([]byte, error) {
	var (
		rel string
		raw []byte
		err error
	)
	switch name {
	case SourceDeviceTreeSerial:
		rel = deviceTreeDirs[0] + "/serial-number"
		raw, err = p.readDeviceTree("serial-number")
	case SourceCPUInfoSerial:
		rel = "proc/cpuinfo"
		raw, err = p.readFile(rel)
	case SourceSunxiSID:
		rel = "sys/bus/nvmem/devices/sunxi-sid0/nvmem"
		raw, err = p.readFile(rel)
	case SourceDMIProductUUID:
		rel = "sys/class/dmi/id/product_uuid"
		raw, err = p.readFile(rel)
	case SourceMachineID:
		rel = "etc/machine-id"
		raw, err = p.readFile(rel)
	default:
		return nil, fmt.Errorf("hw: unknown identity source %q", name)
	}
	where := "/" + rel
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("hw: %s (%s): %w", name, where, ErrSourceAbsent)
		}
		return nil, fmt.Errorf("hw: %s (%s): %w", name, where, err)
	}
	v, err := normalise(name, raw)
	if err != nil {
		return nil, fmt.Errorf("hw: %s (%s): %w", name, where, err)
	}
	return v, nil
}

// placeholderUUIDs are SMBIOS UUIDs firmware vendors ship unfilled.
var placeholderUUIDs = map[string]bool{
	"00000000-0000-0000-0000-000000000000": true,
	"ffffffff-ffff-ffff-ffff-ffffffffffff": true,
	"03000200-0400-0500-0006-000700080009": true, // common AMI default
}

func normalise(name SourceName, raw []byte) ([]byte, error) {
	switch name {
	case SourceDeviceTreeSerial:
		s := strings.ToLower(strings.TrimSpace(strings.Trim(string(raw), "\x00")))
		return nonPlaceholderText(s)
	case SourceCPUInfoSerial:
		for _, line := range strings.Split(string(raw), "\n") {
			key, value, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(key) == "Serial" {
				return nonPlaceholderText(strings.ToLower(strings.TrimSpace(value)))
			}
		}
		return nil, ErrSourceAbsent
	case SourceSunxiSID:
		// The chip ID is the first 128 bits; the rest holds calibration data
		// that the kernel may hide or that changes with thermal trim writes.
		if len(raw) < 16 {
			return nil, fmt.Errorf("%w: %d bytes, want at least 16", ErrSourcePlaceholder, len(raw))
		}
		chip := raw[:16]
		if allBytes(chip, 0x00) || allBytes(chip, 0xff) {
			return nil, ErrSourcePlaceholder
		}
		return []byte(hex.EncodeToString(chip)), nil
	case SourceDMIProductUUID:
		s := strings.ToLower(strings.TrimSpace(string(raw)))
		if s == "" || placeholderUUIDs[s] {
			return nil, ErrSourcePlaceholder
		}
		return []byte(s), nil
	case SourceMachineID:
		s := strings.ToLower(strings.TrimSpace(string(raw)))
		if len(s) != 32 || !isHex(s) || strings.Trim(s, "0") == "" {
			// systemd writes "uninitialized" until first boot completes.
			return nil, fmt.Errorf("%w: not 32 hex digits", ErrSourcePlaceholder)
		}
		return []byte(s), nil
	}
	return nil, fmt.Errorf("unknown identity source %q", name)
}

func nonPlaceholderText(s string) ([]byte, error) {
	if strings.Trim(s, "0") == "" {
		return nil, ErrSourcePlaceholder
	}
	return []byte(s), nil
}

func allBytes(b []byte, v byte) bool {
	return len(bytes.Trim(b, string([]byte{v}))) == 0
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// Package hw tells lmntd what hardware it runs on: which board (Raspberry Pi
// models, BTT CB1/CB2, Orange Pi, generic x86_64/arm64), which identity sources
// that board offers (device-tree serial number, cpuinfo Serial, the Allwinner
// SoC SID, DMI product UUID, /etc/machine-id) and whether a TPM 2.0 is wired.
//
// Everything is read below Paths.Root, so tests run on fixture trees
// (the top-level hw/boards/<board>/) laid out like the real /proc and /sys. Nothing here
// needs privileges; sources the caller may not read are reported as such.
package hw

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Paths locates the host files hw reads. The zero value reads the running host.
type Paths struct {
	// Root is the filesystem root the well-known paths are resolved under
	// ("/" when empty). Tests point it at a fixture tree.
	Root string
}

func (p Paths) root() string {
	if p.Root == "" {
		return "/"
	}
	return p.Root
}

// Path returns the host path rel ("proc/cpuinfo") resolved under Root.
func (p Paths) Path(rel string) string {
	return filepath.Join(p.root(), filepath.FromSlash(rel))
}

// readFile reads a small host file below Root.
func (p Paths) readFile(rel string) ([]byte, error) {
	return os.ReadFile(p.Path(rel))
}

// deviceTreeDirs are the two places the kernel exposes the flattened device
// tree; /proc/device-tree is normally a symlink to the second.
var deviceTreeDirs = []string{"proc/device-tree", "sys/firmware/devicetree/base"}

// readDeviceTree reads a device-tree property from whichever device-tree
// directory exists.
func (p Paths) readDeviceTree(prop string) ([]byte, error) {
	var firstErr error
	for _, dir := range deviceTreeDirs {
		b, err := p.readFile(dir + "/" + prop)
		if err == nil {
			return b, nil
		}
		if firstErr == nil || !errors.Is(err, fs.ErrNotExist) {
			firstErr = err
		}
	}
	return nil, firstErr
}

// dtStrings splits a device-tree string-list property: NUL-terminated
// strings, concatenated. Empty entries are dropped.
func dtStrings(b []byte) []string {
	var out []string
	for _, s := range bytes.Split(b, []byte{0}) {
		if len(s) > 0 {
			out = append(out, string(s))
		}
	}
	return out
}

// Family groups boards that share identity sources and TPM wiring.
type Family string

// Board families.
const (
	FamilyRaspberryPi Family = "raspberrypi"
	FamilyBTT         Family = "bigtreetech"
	FamilyOrangePi    Family = "orangepi"
	FamilyGeneric     Family = "generic"
)

// Kind identifies a board model. The strings are stable (they appear in
// `lmnt status` output and logs).
type Kind string

// Known boards.
const (
	KindRPiZero      Kind = "rpi-zero"
	KindRPiZeroW     Kind = "rpi-zero-w"
	KindRPiZero2W    Kind = "rpi-zero-2-w"
	KindRPi3B        Kind = "rpi-3b"
	KindRPi3BPlus    Kind = "rpi-3b-plus"
	KindRPi4B        Kind = "rpi-4b"
	KindRPi400       Kind = "rpi-400"
	KindRPi5         Kind = "rpi-5"
	KindRPiCM4       Kind = "rpi-cm4"
	KindRPiOther     Kind = "rpi-other"
	KindBTTCB1       Kind = "btt-cb1"
	KindBTTCB2       Kind = "btt-cb2"
	KindOrangePi     Kind = "orangepi"
	KindGenericX86   Kind = "generic-x86_64"
	KindGenericARM64 Kind = "generic-arm64"
	KindGenericARM   Kind = "generic-arm"
	KindUnknown      Kind = "unknown"
)

// SoCVendor is the silicon vendor, which decides the SoC-unique-ID source.
type SoCVendor string

// SoC vendors hw distinguishes.
const (
	SoCBroadcom  SoCVendor = "broadcom"
	SoCAllwinner SoCVendor = "allwinner"
	SoCRockchip  SoCVendor = "rockchip"
	SoCIntelAMD  SoCVendor = "x86"
	SoCOther     SoCVendor = ""
)

// Board is what Detect found.
type Board struct {
	Kind   Kind
	Family Family
	// Model is the human name: the device-tree model ("Raspberry Pi 4 Model B
	// Rev 1.4") or DMI vendor + product on x86.
	Model string
	// Compatible is the device-tree compatible list, most specific first.
	Compatible []string
	// SoC is the SoC compatible ("brcm,bcm2711", "allwinner,sun50i-h616"),
	// the last entry of Compatible; empty without a device tree.
	SoC       string
	SoCVendor SoCVendor
	// Machine is the kernel architecture (uname -m): x86_64, aarch64, armv7l...
	Machine string
}

// boardRule maps device-tree compatible strings (exact) or model prefixes to
// a board. The first matching rule wins, so specific entries come first.
type boardRule struct {
	kind         Kind
	family       Family
	compatible   []string // any of these in the compatible list
	modelPrefix  []string // or the model starts with one of these
	compatPrefix string   // or any compatible entry starts with this
}

var boardRules = []boardRule{
	{kind: KindRPiZero2W, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,model-zero-2-w", "raspberrypi,model-zero-2"}, modelPrefix: []string{"Raspberry Pi Zero 2"}},
	{kind: KindRPiZeroW, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,model-zero-w"}, modelPrefix: []string{"Raspberry Pi Zero W"}},
	{kind: KindRPiZero, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,model-zero"}, modelPrefix: []string{"Raspberry Pi Zero"}},
	{kind: KindRPi3BPlus, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,3-model-b-plus"}, modelPrefix: []string{"Raspberry Pi 3 Model B Plus"}},
	{kind: KindRPi3B, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,3-model-b"}, modelPrefix: []string{"Raspberry Pi 3 Model B"}},
	{kind: KindRPi400, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,400"}, modelPrefix: []string{"Raspberry Pi 400"}},
	{kind: KindRPiCM4, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,4-compute-module"}, modelPrefix: []string{"Raspberry Pi Compute Module 4"}},
	{kind: KindRPi4B, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,4-model-b"}, modelPrefix: []string{"Raspberry Pi 4 Model B"}},
	{kind: KindRPi5, family: FamilyRaspberryPi, compatible: []string{"raspberrypi,5-model-b"}, modelPrefix: []string{"Raspberry Pi 5"}},
	{kind: KindRPiOther, family: FamilyRaspberryPi, compatPrefix: "raspberrypi,", modelPrefix: []string{"Raspberry Pi"}},
	{kind: KindBTTCB1, family: FamilyBTT, compatible: []string{"bigtreetech,cb1", "bigtreetech,cb1-manta", "bigtreetech,cb1-emmc"}, modelPrefix: []string{"BigTreeTech CB1", "BTT-CB1", "BTT CB1"}},
	{kind: KindBTTCB2, family: FamilyBTT, compatible: []string{"bigtreetech,cb2"}, modelPrefix: []string{"BigTreeTech CB2", "BTT-CB2", "BTT CB2"}},
	{kind: KindOrangePi, family: FamilyOrangePi, compatPrefix: "xunlong,", modelPrefix: []string{"OrangePi", "Orange Pi"}},
}

// Detect identifies the board from the device tree (model, compatible), or
// from DMI on machines without one. It fails only when the host gives no
// clue at all; an unrecognised device-tree board is generic-arm64/arm.
func Detect(p Paths) (Board, error) {
	b := Board{Machine: p.machine()}
	model, modelErr := p.readDeviceTree("model")
	compat, compatErr := p.readDeviceTree("compatible")
	if modelErr == nil || compatErr == nil {
		b.Model = strings.TrimSpace(strings.Join(dtStrings(model), " "))
		b.Compatible = dtStrings(compat)
		if n := len(b.Compatible); n > 0 {
			b.SoC = b.Compatible[n-1]
		}
		b.SoCVendor = socVendor(b.SoC)
		b.Kind, b.Family = matchBoard(b.Model, b.Compatible)
		if b.Kind == KindUnknown {
			b.Family = FamilyGeneric
			if strings.Contains(b.Machine, "64") {
				b.Kind = KindGenericARM64
			} else {
				b.Kind = KindGenericARM
			}
		}
		return b, nil
	}
	if vendor, product, ok := p.dmiName(); ok {
		b.Kind, b.Family, b.SoCVendor = KindGenericX86, FamilyGeneric, SoCIntelAMD
		b.Model = strings.TrimSpace(vendor + " " + product)
		if !strings.HasPrefix(b.Machine, "x86") && b.Machine != "i686" {
			// DMI also exists on ACPI arm64 servers: still generic, not x86.
			b.Kind, b.SoCVendor = KindGenericARM64, SoCOther
		}
		return b, nil
	}
	b.Kind, b.Family = KindUnknown, FamilyGeneric
	return b, fmt.Errorf("hw: no device tree (%s) and no DMI (%s) below %s: cannot tell the board",
		deviceTreeDirs[1], "sys/class/dmi/id", p.root())
}

func matchBoard(model string, compatible []string) (Kind, Family) {
	for _, r := range boardRules {
		for _, c := range compatible {
			for _, want := range r.compatible {
				if c == want {
					return r.kind, r.family
				}
			}
			if r.compatPrefix != "" && strings.HasPrefix(c, r.compatPrefix) {
				return r.kind, r.family
			}
		}
	}
	// Vendor kernels sometimes carry only the SoC compatible; fall back to the model.
	for _, r := range boardRules {
		for _, prefix := range r.modelPrefix {
			if strings.HasPrefix(model, prefix) {
				return r.kind, r.family
			}
		}
	}
	return KindUnknown, FamilyGeneric
}

func socVendor(soc string) SoCVendor {
	switch {
	case strings.HasPrefix(soc, "brcm,"):
		return SoCBroadcom
	case strings.HasPrefix(soc, "allwinner,"):
		return SoCAllwinner
	case strings.HasPrefix(soc, "rockchip,"):
		return SoCRockchip
	}
	return SoCOther
}

// machine is the kernel's architecture name: /proc/sys/kernel/arch (Linux
// 6.1+), else derived from the architecture this binary was built for.
func (p Paths) machine() string {
	if b, err := p.readFile("proc/sys/kernel/arch"); err == nil {
		if m := strings.TrimSpace(string(b)); m != "" {
			return m
		}
	}
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "arm":
		return "armv7l"
	case "386":
		return "i686"
	}
	return runtime.GOARCH
}

// dmiName reads the DMI system vendor and product name (world-readable).
func (p Paths) dmiName() (vendor, product string, ok bool) {
	v, verr := p.readFile("sys/class/dmi/id/sys_vendor")
	n, nerr := p.readFile("sys/class/dmi/id/product_name")
	if verr != nil && nerr != nil {
		return "", "", false
	}
	return strings.TrimSpace(string(v)), strings.TrimSpace(string(n)), true
}

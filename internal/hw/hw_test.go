package hw

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

type boardWant struct {
	kind      Kind
	family    Family
	model     string
	soc       string
	machine   string
	sources   map[SourceName]string // readable sources and their normalised values
	absent    []SourceName          // sources that must report ErrSourceAbsent
	placehold []SourceName          // sources that must report ErrSourcePlaceholder
	tpm       *TPM
}

// boardTrees is the top-level hw/boards: one tree per board, laid out like
// the board's /proc, /sys and /etc (internal/seal's tests use them too).
var boardTrees = filepath.Join("..", "..", "hw", "boards")

func fixture(name string) Paths { return Paths{Root: filepath.Join(boardTrees, name)} }

func TestBoards(t *testing.T) {
	boards := map[string]boardWant{
		"rpi-zero": {kind: KindRPiZero, family: FamilyRaspberryPi, model: "Raspberry Pi Zero Rev 1.3", soc: "brcm,bcm2835", machine: "armv6l",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "00000000d2e3f4a5", SourceCPUInfoSerial: "00000000d2e3f4a5", SourceMachineID: "5c1e0b9f2a7d4e3c8b6a1f0e9d8c7b6a"}},
		"rpi-zero-w": {kind: KindRPiZeroW, family: FamilyRaspberryPi, model: "Raspberry Pi Zero W Rev 1.1", soc: "brcm,bcm2835", machine: "armv6l",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "0000000081c2d3e4", SourceCPUInfoSerial: "0000000081c2d3e4"}},
		"rpi-zero-2-w": {kind: KindRPiZero2W, family: FamilyRaspberryPi, model: "Raspberry Pi Zero 2 W Rev 1.0", soc: "brcm,bcm2837", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "00000000e1f2a3b4", SourceCPUInfoSerial: "00000000e1f2a3b4"}},
		"rpi-3b": {kind: KindRPi3B, family: FamilyRaspberryPi, model: "Raspberry Pi 3 Model B Rev 1.2", soc: "brcm,bcm2837", machine: "armv7l",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "000000003c4d5e6f"}},
		"rpi-3b-plus": {kind: KindRPi3BPlus, family: FamilyRaspberryPi, model: "Raspberry Pi 3 Model B Plus Rev 1.3", soc: "brcm,bcm2837", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "00000000a9b8c7d6"}},
		"rpi-4b": {kind: KindRPi4B, family: FamilyRaspberryPi, model: "Raspberry Pi 4 Model B Rev 1.4", soc: "brcm,bcm2711", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "10000000a3b4c5d6", SourceCPUInfoSerial: "10000000a3b4c5d6"},
			absent:  []SourceName{SourceSunxiSID, SourceDMIProductUUID},
			tpm: &TPM{Present: true, Version: 2, Driver: "tpm_tis_spi",
				Devices: []string{filepath.Join(boardTrees, "rpi-4b/dev/tpmrm0"), filepath.Join(boardTrees, "rpi-4b/dev/tpm0")}}},
		"rpi-400": {kind: KindRPi400, family: FamilyRaspberryPi, model: "Raspberry Pi 400 Rev 1.0", soc: "brcm,bcm2711", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "10000000b5c6d7e8"}},
		"rpi-5": {kind: KindRPi5, family: FamilyRaspberryPi, model: "Raspberry Pi 5 Model B Rev 1.0", soc: "brcm,bcm2712", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "9a3f0f5c8d2e1b47", SourceCPUInfoSerial: "9a3f0f5c8d2e1b47"}},
		"rpi-cm4": {kind: KindRPiCM4, family: FamilyRaspberryPi, model: "Raspberry Pi Compute Module 4 Rev 1.1", soc: "brcm,bcm2711", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "10000000c7d8e9fa"}},
		// Vendor device tree: compatible names only the SoC, the model decides.
		"btt-cb1": {kind: KindBTTCB1, family: FamilyBTT, model: "BigTreeTech CB1", soc: "allwinner,sun50i-h616", machine: "aarch64",
			sources: map[SourceName]string{SourceSunxiSID: "82c000083c0e2f1d5a4b3c2d1e0f0102", SourceDeviceTreeSerial: "82c000083c0e2f1d"},
			absent:  []SourceName{SourceCPUInfoSerial}},
		"btt-cb2": {kind: KindBTTCB2, family: FamilyBTT, model: "BigTreeTech CB2", soc: "rockchip,rk3566", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "6a0e4b1c2d3f5e71", SourceMachineID: "8192a3b4c5d6e7f8091a2b3c4d5e6f70"}},
		"orangepi-zero2": {kind: KindOrangePi, family: FamilyOrangePi, model: "OrangePi Zero2", soc: "allwinner,sun50i-h616", machine: "aarch64",
			sources: map[SourceName]string{SourceSunxiSID: "33806c001c1d2e3f405162738495a6b7"},
			absent:  []SourceName{SourceDeviceTreeSerial}},
		"orangepi-5": {kind: KindOrangePi, family: FamilyOrangePi, model: "Orange Pi 5", soc: "rockchip,rk3588", machine: "aarch64",
			sources: map[SourceName]string{SourceDeviceTreeSerial: "1e2d3c4b5a697887"}},
		"generic-arm64": {kind: KindGenericARM64, family: FamilyGeneric, model: "Pine64 Rock64", soc: "rockchip,rk3328", machine: "aarch64",
			sources:   map[SourceName]string{SourceMachineID: "b4c5d6e7f8091a2b3c4d5e6f708192a3"},
			placehold: []SourceName{SourceDeviceTreeSerial},
			tpm:       &TPM{}},
		"generic-x86_64": {kind: KindGenericX86, family: FamilyGeneric, model: "Intel(R) Client Systems NUC8i5BEH", machine: "x86_64",
			sources: map[SourceName]string{SourceDMIProductUUID: "4c4c4544-0042-3510-8052-b4c04f4e3732", SourceMachineID: "c5d6e7f8091a2b3c4d5e6f708192a3b4"},
			absent:  []SourceName{SourceDeviceTreeSerial, SourceCPUInfoSerial},
			tpm: &TPM{Present: true, Version: 2, Driver: "tpm_crb",
				Devices: []string{filepath.Join(boardTrees, "generic-x86_64/dev/tpmrm0"), filepath.Join(boardTrees, "generic-x86_64/dev/tpm0")}}},
	}
	entries, err := os.ReadDir(boardTrees)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(boards) {
		t.Errorf("hw/boards has %d board trees, the test covers %d: add the new tree to the table", len(entries), len(boards))
	}
	for name, want := range boards {
		t.Run(name, func(t *testing.T) {
			p := fixture(name)
			b, err := Detect(p)
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if b.Kind != want.kind || b.Family != want.family || b.Model != want.model || b.SoC != want.soc || b.Machine != want.machine {
				t.Errorf("Detect = {%s %s %q soc=%q %s}, want {%s %s %q soc=%q %s}",
					b.Kind, b.Family, b.Model, b.SoC, b.Machine, want.kind, want.family, want.model, want.soc, want.machine)
			}
			for src, value := range want.sources {
				got, err := ReadIdentitySource(p, src)
				if err != nil || string(got) != value {
					t.Errorf("%s = %q, %v; want %q", src, got, err, value)
				}
			}
			for _, src := range want.absent {
				if _, err := ReadIdentitySource(p, src); !errors.Is(err, ErrSourceAbsent) {
					t.Errorf("%s: err = %v, want ErrSourceAbsent", src, err)
				}
			}
			for _, src := range want.placehold {
				if _, err := ReadIdentitySource(p, src); !errors.Is(err, ErrSourcePlaceholder) {
					t.Errorf("%s: err = %v, want ErrSourcePlaceholder", src, err)
				}
			}
			// The first readable source in preference order must be the
			// board-unique one wherever the board has one.
			found, _ := ReadIdentity(p, b)
			if len(found) == 0 {
				t.Fatal("ReadIdentity found no source")
			}
			wantHW := name != "generic-arm64"
			if found[0].Name.HardwareBound() != wantHW {
				t.Errorf("first identity source %s: hardware-bound=%v, want %v", found[0].Name, found[0].Name.HardwareBound(), wantHW)
			}
			if want.tpm != nil {
				got := DetectTPM(p)
				if got.Present != want.tpm.Present || got.Version != want.tpm.Version || got.Driver != want.tpm.Driver ||
					!slices.Equal(got.Devices, want.tpm.Devices) || got.Usable() != want.tpm.Present {
					t.Errorf("DetectTPM = %+v, want %+v", got, *want.tpm)
				}
			}
		})
	}
}

func TestIdentitySourcePreference(t *testing.T) {
	cases := map[string][]SourceName{
		"rpi-zero":       {SourceDeviceTreeSerial, SourceCPUInfoSerial, SourceMachineID},
		"btt-cb1":        {SourceSunxiSID, SourceDeviceTreeSerial, SourceMachineID},
		"btt-cb2":        {SourceDeviceTreeSerial, SourceMachineID},
		"generic-x86_64": {SourceDMIProductUUID, SourceMachineID},
	}
	for name, want := range cases {
		b, err := Detect(fixture(name))
		if err != nil {
			t.Fatal(err)
		}
		if got := b.IdentitySources(); !slices.Equal(got, want) {
			t.Errorf("%s: IdentitySources = %v, want %v", name, got, want)
		}
	}
}

func TestDetectEmptyRootFails(t *testing.T) {
	b, err := Detect(Paths{Root: t.TempDir()})
	if err == nil || b.Kind != KindUnknown {
		t.Fatalf("Detect(empty root) = %v, %v; want KindUnknown and an error", b.Kind, err)
	}
}

func TestMachineIDUninitialised(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "machine-id"), []byte("uninitialized\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIdentitySource(Paths{Root: root}, SourceMachineID); !errors.Is(err, ErrSourcePlaceholder) {
		t.Fatalf("err = %v, want ErrSourcePlaceholder", err)
	}
}

func TestUnreadableSourceIsNotAbsent(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "sys", "class", "dmi", "id")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A directory in place of the file: read fails with something other than
	// "not exist", which must surface, not be mistaken for absence.
	if err := os.Mkdir(filepath.Join(dir, "product_uuid"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := ReadIdentitySource(Paths{Root: root}, SourceDMIProductUUID)
	if err == nil || errors.Is(err, ErrSourceAbsent) {
		t.Fatalf("err = %v, want a read error that is not ErrSourceAbsent", err)
	}
}

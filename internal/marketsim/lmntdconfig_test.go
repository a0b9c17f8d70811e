package marketsim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/config"
)

// TestLmntdTOMLLoads: the generated file passes lmntd's own validation in
// both profiles and points at this simulator.
func TestLmntdTOMLLoads(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	for _, legacy := range []bool{false, true} {
		path := filepath.Join(dir, "lmntd.toml")
		toml := s.LmntdTOML(LmntdConfig{Legacy: legacy, CAFile: filepath.Join(dir, "ca.pem"),
			StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run"), KlipperUser: "root",
			PrinterCfg: filepath.Join(dir, "printer.cfg"), BridgeSocket: filepath.Join(dir, "run", "klipper.sock"),
			API: "[api]\nsocket = \"" + filepath.Join(dir, "run", "api.sock") + "\"\n"})
		if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.pem"), s.CACertPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(config.Options{ConfigFile: path, Environ: func() []string { return nil }})
		if err != nil {
			t.Fatalf("legacy=%v: generated config does not load:\n%v\n%s", legacy, err, toml)
		}
		wantProfile := map[bool]string{false: "current", true: "legacy"}[legacy]
		if string(cfg.APIProfile) != wantProfile || cfg.Marketplace.URL != s.URL() || cfg.Seal.Backend != "software" {
			t.Fatalf("legacy=%v: profile %q url %q seal %q", legacy, cfg.APIProfile, cfg.Marketplace.URL, cfg.Seal.Backend)
		}
		if legacy && cfg.Marketplace.CWSURL != s.URL() {
			t.Fatalf("legacy: cws_url = %q, want the simulator", cfg.Marketplace.CWSURL)
		}
	}
}

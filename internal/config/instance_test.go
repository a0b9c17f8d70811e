package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// A named instance's defaults move out of the default instance's way;
// what the file sets still wins.
func TestInstanceDefaults(t *testing.T) {
	p := testutil.WriteFile(t, t.TempDir(), "printer_2.toml", "instance = \"printer_2\"\n[klipper]\nuser = \"farm\"\nconfig_file = \"/srv/p2/printer.cfg\"\n")
	cfg := mustLoad(t, Options{ConfigFile: p, Environ: env()})
	want := map[string]string{
		"state":   "/var/lib/lmntd/instances/printer_2",
		"runtime": "/run/lmntd/printer_2",
		"api":     "/run/lmntd/printer_2/api.sock",
		"bridge":  "/run/lmntd/printer_2/klipper.sock",
		"gcodes":  "/home/pi/printer_2_data/gcodes",
		"config":  "/srv/p2/printer.cfg",
	}
	got := map[string]string{
		"state": cfg.Paths.StateDirectory, "runtime": cfg.Paths.RuntimeDirectory, "api": cfg.API.Socket,
		"bridge": cfg.Klipper.BridgeSocket, "gcodes": cfg.Klipper.GcodesDir, "config": cfg.Klipper.ConfigFile,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
	if cfg.Origin("api.socket").Kind != SourceDefault {
		t.Errorf("api.socket's origin = %v, want the default", cfg.Origin("api.socket"))
	}

	// The default instance keeps today's layout.
	def := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, t.TempDir(), "lmntd.toml", ""), Environ: env()})
	if def.Paths.StateDirectory != "/var/lib/lmntd" || def.API.Socket != "/run/lmntd/api.sock" || def.Instance != "" {
		t.Errorf("default instance: state %s, socket %s, instance %q", def.Paths.StateDirectory, def.API.Socket, def.Instance)
	}
}

// LMNTD_INSTANCE (the template unit's --instance alike) picks the
// instance's own config file when none is named.
func TestInstanceFromEnvironmentPicksItsFile(t *testing.T) {
	o := Options{Environ: env("LMNTD_INSTANCE=printer_3")}
	if _, err := os.Stat(InstanceConfigFile("printer_3")); err == nil {
		t.Skip("this host has a real printer_3 instance")
	}
	cfg := mustLoad(t, o)
	if cfg.Paths.StateDirectory != "/var/lib/lmntd/instances/printer_3" || cfg.Instance != "printer_3" {
		t.Errorf("state %s, instance %q", cfg.Paths.StateDirectory, cfg.Instance)
	}
	if !strings.Contains(strings.Join(cfg.Notes(), "\n"), InstanceConfigFile("printer_3")) {
		t.Errorf("notes do not name the instance's config file: %q", cfg.Notes())
	}
}

// A name that is not a plain systemd instance name is refused, naming the
// key, and derives no path.
func TestInstanceNameRefused(t *testing.T) {
	for _, name := range []string{"../etc", "a.b", "printer 1", strings.Repeat("x", 33)} {
		p := testutil.WriteFile(t, t.TempDir(), "lmntd.toml", "instance = \""+name+"\"\n")
		_, err := Load(Options{ConfigFile: p, Environ: env()})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != "instance" {
			t.Errorf("instance %q: %v, want an error naming instance", name, err)
		}
	}
}

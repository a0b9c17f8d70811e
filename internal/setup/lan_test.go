package setup

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/config"
)

// TestAllowNetwork: the owner's yes writes api.trusted_clients as a list
// lmntd's config loader accepts, a second run and an owner's own setting
// are left alone, and --remove takes it out again.
func TestAllowNetwork(t *testing.T) {
	h := mainsailOS(t)
	lan := netip.MustParsePrefix("192.168.7.23/24")
	_, out := run(t, h, Options{AllowNetwork: lan})
	toml := h.read(ConfigFile)
	if !strings.Contains(toml, "\ntrusted_clients = [\"192.168.7.0/24\"]\n") || !strings.Contains(out, "192.168.7.0/24") {
		t.Fatalf("lmntd.toml after setup:\n%s\noutput:\n%s", toml, out)
	}
	cfg, err := config.Load(config.Options{ConfigFile: h.path(ConfigFile), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatalf("lmntd cannot load what setup wrote: %v", err)
	}
	if got := cfg.API.TrustedClients; len(got) != 1 || got[0] != netip.MustParsePrefix("192.168.7.0/24") {
		t.Errorf("trusted_clients loaded as %v", got)
	}
	if _, out = run(t, h, Options{AllowNetwork: netip.MustParsePrefix("10.0.0.0/8")}); !strings.Contains(out, "already set") ||
		strings.Contains(h.read(ConfigFile), "10.0.0.0/8") {
		t.Errorf("a second run changed the owner's trusted_clients:\n%s", h.read(ConfigFile))
	}
	remove(t, h, Options{})
	if strings.Contains(h.read(ConfigFile), "\ntrusted_clients") {
		t.Errorf("--remove left trusted_clients:\n%s", h.read(ConfigFile))
	}
}

package setup

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/config"
)

// TestAllowNetwork: the owner's yes writes api.trusted_clients into its
// own drop-in (never the conffile lmntd.toml) as a list lmntd's config
// loader accepts; an owner's own setting in lmntd.toml is left alone; and
// --remove takes the drop-in out again.
func TestAllowNetwork(t *testing.T) {
	h := mainsailOS(t)
	before := readMaybe(h, ConfigFile)
	lan := netip.MustParsePrefix("192.168.7.23/24")
	_, out := run(t, h, Options{AllowNetwork: lan})
	dropIn := h.read(NetworkDropIn)
	if !strings.Contains(dropIn, "\ntrusted_clients = [\"192.168.7.0/24\"]\n") || !strings.Contains(out, "192.168.7.0/24") {
		t.Fatalf("%s after setup:\n%s\noutput:\n%s", NetworkDropIn, dropIn, out)
	}
	if readMaybe(h, ConfigFile) != before {
		t.Errorf("setup edited the conffile %s", ConfigFile)
	}
	cfg, err := config.Load(config.Options{ConfigFile: h.path(ConfigFile), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatalf("lmntd cannot load what setup wrote: %v", err)
	}
	if got := cfg.API.TrustedClients; len(got) != 1 || got[0] != netip.MustParsePrefix("192.168.7.0/24") {
		t.Errorf("trusted_clients loaded as %v", got)
	}
	remove(t, h, Options{})
	if exists(h, NetworkDropIn) {
		t.Errorf("--remove left %s", NetworkDropIn)
	}

	// The owner's own trusted_clients in lmntd.toml wins: nothing written.
	owned := strings.Replace(before, "\n[api]\n", "\n[api]\ntrusted_clients = [\"10.1.0.0/16\"]\n", 1)
	if owned == before {
		t.Fatal("the shipped lmntd.toml has no [api] section to edit")
	}
	h.write(ConfigFile, 0o644, 0, 0, owned)
	if _, out = run(t, h, Options{AllowNetwork: netip.MustParsePrefix("10.0.0.0/8")}); !strings.Contains(out, "already set") || exists(h, NetworkDropIn) {
		t.Errorf("setup overrode the owner's trusted_clients:\n%s", out)
	}
}

// readMaybe is rel's content, or "" when it does not exist.
func readMaybe(h *host, rel string) string {
	b, err := os.ReadFile(h.path(rel))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		h.t.Fatal(err)
	}
	return string(b)
}

func exists(h *host, rel string) bool {
	_, err := os.Stat(h.path(rel))
	return err == nil
}

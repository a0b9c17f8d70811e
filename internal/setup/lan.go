package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	gotoml "github.com/pelletier/go-toml/v2"
)

// allowNetwork lets browsers on the owner's network use the status page:
// api.trusted_clients = ["CIDR"] in its own config drop-in (NetworkDropIn),
// never in the owner's lmntd.toml (a conffile: editing it would stop
// unattended upgrades at a prompt). Only when the owner said yes
// (Options.AllowNetwork); a trusted_clients the owner already wrote in
// lmntd.toml is left as it is. --remove deletes the drop-in.
func (r *runner) allowNetwork(Instance) error {
	if !r.opts.AllowNetwork.IsValid() {
		return nil
	}
	own, err := os.ReadFile(r.at(r.t.ownerConfig))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("setup: %w", err)
	}
	var owner struct {
		API struct {
			TrustedClients *[]string `toml:"trusted_clients"`
		} `toml:"api"`
	}
	// An lmntd.toml that does not parse is the loader's to report; setup
	// then just adds its drop-in.
	if gotoml.Unmarshal(own, &owner) == nil && owner.API.TrustedClients != nil {
		r.step("status page", Unchanged, "api.trusted_clients is already set in "+r.t.ownerConfig+"; left as it is", "")
		return nil
	}
	network := r.opts.AllowNetwork.Masked().String()
	content := fmt.Sprintf(`# Written by `+"`lmnt setup --allow-network`"+`; `+"`lmnt setup --remove`"+` deletes it.
# Browsers on this network may use the status page: pair the printer and
# confirm the bed is clear. Allow only a network you trust.
[api]
trusted_clients = [%q]
`, network)
	if err := r.writeOwnFile("status page", r.t.networkDropIn, content, func() { r.m.NetworkDropIn = r.t.networkDropIn }); err != nil {
		return err
	}
	r.step("status page", Changed, "browsers on "+network+" may use the status page (api.trusted_clients)", "")
	return nil
}

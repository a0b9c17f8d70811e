package marketsim

import (
	"fmt"
	"strings"
)

// LmntdConfig describes an lmntd that talks to this simulator: `make demo`
// and the daemon's tests run the real lmntd with the file LmntdTOML makes.
type LmntdConfig struct {
	Legacy       bool   // api_profile = "legacy" (with cws_url on the simulator)
	CAFile       string // where the caller wrote CACertPEM
	StateDir     string
	RuntimeDir   string
	KlipperUser  string // the only uid admitted on the bridge socket
	PrinterCfg   string
	BridgeSocket string
	// API is the whole [api] section (socket, listeners, access).
	API string
	// MoonrakerConf, when set, is an old plugin's moonraker.conf to import
	// (a migration): api_profile is then "auto", and the marketplace URL,
	// cws_url and check_interval are left to the import.
	MoonrakerConf string
	// Extra is appended verbatim (more sections).
	Extra string
	// CheckInterval is marketplace.check_interval; "" ⇒ "5s".
	CheckInterval string
}

// LmntdTOML renders c as lmntd.toml: quick polls and status for a local run,
// the software sealer, and no moonraker.conf import (unless MoonrakerConf).
func (s *Server) LmntdTOML(c LmntdConfig) string {
	profile, cws := "current", ""
	if c.CheckInterval == "" {
		c.CheckInterval = "5s"
	}
	if c.Legacy {
		profile, cws = "legacy", fmt.Sprintf("cws_url = %q\n", s.URL())
	}
	market := fmt.Sprintf("url = %q\n%scheck_interval = %q\n", s.URL(), cws, c.CheckInterval)
	migration := "import_moonraker = false\n"
	if c.MoonrakerConf != "" {
		profile, market = "auto", ""
		migration = fmt.Sprintf("moonraker_conf = %q\n", c.MoonrakerConf)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# An lmntd against the LMNT marketplace simulator.
api_profile = %q
# The simulator's storage and second LMNT host are other loopback ports:
# downloads may reach them only in development mode.
development_mode = true

[marketplace]
%stls_ca_file = %q

[push]
enabled = true
base_url = %q

[paths]
state_directory = %q
runtime_directory = %q

[seal]
backend = "software"

[klipper]
user = %q
config_file = %q
bridge_socket = %q
status_interval = "1s"

%s
[migration]
%s%s`, profile, market, c.CAFile, s.PushURL(), c.StateDir, c.RuntimeDir,
		c.KlipperUser, c.PrinterCfg, c.BridgeSocket, c.API, migration, c.Extra)
	return b.String()
}

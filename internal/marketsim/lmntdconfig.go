package marketsim

import (
	"fmt"
	"strings"
)

// LmntdConfig describes an lmntd that talks to this simulator: `lmnt demo`
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
	// Extra is appended verbatim (more sections).
	Extra string
	// CheckInterval is marketplace.check_interval; "" ⇒ "5s".
	CheckInterval string
}

// LmntdTOML renders c as lmntd.toml: quick polls and status for a local run,
// the software sealer, and no moonraker.conf import.
func (s *Server) LmntdTOML(c LmntdConfig) string {
	profile, cws := "current", ""
	if c.CheckInterval == "" {
		c.CheckInterval = "5s"
	}
	if c.Legacy {
		profile, cws = "legacy", fmt.Sprintf("cws_url = %q\n", s.URL())
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# An lmntd against the LMNT marketplace simulator.
api_profile = %q

[marketplace]
url = %q
%stls_ca_file = %q
check_interval = %q

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
import_moonraker = false
%s`, profile, s.URL(), cws, c.CAFile, c.CheckInterval, s.PushURL(), c.StateDir, c.RuntimeDir,
		c.KlipperUser, c.PrinterCfg, c.BridgeSocket, c.API, c.Extra)
	return b.String()
}

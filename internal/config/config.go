// Package config builds lmntd's one validated configuration from, lowest
// precedence first: built-in defaults, /etc/lmntd/lmntd.toml, the
// [lmnt_marketplace_plugin] section of an old plugin's moonraker.conf (a
// migration aid), LMNTD_* environment variables and command-line flags. It
// validates everything at once with errors that name the source, the key and
// what is allowed, remembers where every value came from (for lmnt doctor),
// and reloads the file on SIGHUP or when it changes.
//
// Secrets never live here: the printer token and key stay sealed in the state
// directory, and an API key is read from the file api.api_key_file names.
package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"
)

// DefaultConfigFile is where the packaged, commented example is installed.
const DefaultConfigFile = "/etc/lmntd/lmntd.toml"

// Marketplace base URLs per API profile, and the legacy auth service.
const (
	DefaultCurrentURL = "https://api.lmnt.co"
	DefaultLegacyURL  = "https://api.lmnt.market"
	DefaultCWSURL     = "https://cws.lmnt.market"
)

// API profiles (see docs/marketplace-contract.md). ProfileAuto decides from
// the imported settings where they are conclusive, else by one probe of the
// marketplace at start (see ProfileDecision).
const (
	ProfileAuto    = "auto"
	ProfileCurrent = "current"
	ProfileLegacy  = "legacy"
)

// Push only (check_interval 0): a slow safety poll still runs, at most one
// request per 5 minutes: SafetyPollInterval with ±SafetyPollJitter, whose
// shortest wait is just over 5 minutes.
const (
	SafetyPollInterval = 5*time.Minute + 30*time.Second
	SafetyPollJitter   = 0.09
)

// Config is every setting of lmntd. Field tags: `koanf` is the key in
// lmntd.toml (nested structs are [sections]); `reload:"live"` marks settings a
// running daemon applies on reload (all others need a restart); `doc` is the
// one-line help of the matching command-line flag.
type Config struct {
	APIProfile      string `koanf:"api_profile" doc:"marketplace API profile: auto, current or legacy"`
	DevelopmentMode bool   `koanf:"development_mode" doc:"allow plain-http marketplace URLs outside loopback, and downloads from plain-http or private addresses (development only)"`
	// Instance names this lmntd's Klipper instance on a host that runs
	// several (a print farm); it labels the metrics.
	Instance string `koanf:"instance" doc:"name of this Klipper instance on a host with several, e.g. printer_1 (empty: the host's only instance)"`

	Marketplace Marketplace `koanf:"marketplace"`
	Push        Push        `koanf:"push"`
	Log         Log         `koanf:"log"`
	Paths       Paths       `koanf:"paths"`
	Seal        Seal        `koanf:"seal"`
	Klipper     Klipper     `koanf:"klipper"`
	API         API         `koanf:"api"`
	Jobs        Jobs        `koanf:"jobs"`
	Limits      Limits      `koanf:"limits"`
	Migration   Migration   `koanf:"migration"`
	Metrics     Metrics     `koanf:"metrics"`

	// Provenance, filled by Load; never part of the file.
	origins  map[string]Source
	imports  []Import
	notes    []string
	degraded []*FieldError
	profile  ProfileDecision
	file     string
}

// ProfileDecision is how api_profile "auto" was (or must be) resolved.
type ProfileDecision struct {
	// Profile is current or legacy; "" when only a probe of the
	// marketplace at start can tell.
	Profile string
	// Reason says why, for the log, lmnt status and lmnt doctor.
	Reason string
}

// Profile is the API profile in effect as far as the configuration can
// tell: api_profile itself unless it is "auto", else the imported
// settings' verdict; Profile "" means the daemon must probe.
func (c *Config) Profile() ProfileDecision { return c.profile }

// PushOnly reports check_interval 0: no regular polling, only the push
// stream and the safety poll.
func (c *Config) PushOnly() bool { return c.Marketplace.CheckInterval == 0 }

// PollSchedule is the poll interval and jitter in effect: check_interval,
// or the safety poll for push only.
func (c *Config) PollSchedule() (interval time.Duration, jitter float64) {
	if c.PushOnly() {
		return SafetyPollInterval, SafetyPollJitter
	}
	return c.Marketplace.CheckInterval, 0
}

// Degraded lists values lmntd could not use and ignores: imported
// moonraker.conf values (each names the file, line, option and key; the value
// below is in effect instead) and api.trusted_clients entries that admit
// loopback. lmnt doctor shows them; they never stop the daemon.
func (c *Config) Degraded() []*FieldError { return append([]*FieldError(nil), c.degraded...) }

// Marketplace is how lmntd reaches the LMNT Marketplace.
type Marketplace struct {
	URL           string        `koanf:"url" doc:"marketplace base URL (empty: the api_profile's default)"`
	CWSURL        string        `koanf:"cws_url" doc:"legacy auth service (CWS) base URL"`
	CheckInterval time.Duration `koanf:"check_interval" reload:"live" doc:"how often to poll the print queue (5s to 1h; 0: push only, with a safety poll every 5 min)"`
	TLSCAFile     string        `koanf:"tls_ca_file" doc:"extra PEM CA bundle trusted for HTTPS, besides the system roots"`
	TokenHosts    []string      `koanf:"token_hosts" doc:"hosts (host or host:port) besides the marketplace URL's own that downloads may present the printer token to, over https (comma-separated)"`
}

// Push is the Firebase event stream that announces queue changes.
type Push struct {
	Enabled           bool   `koanf:"enabled" doc:"listen to the push stream (polling continues as a fallback)"`
	FirebaseProjectID string `koanf:"firebase_project_id" doc:"Firebase project of the push stream"`
	BaseURL           string `koanf:"base_url" doc:"push stream base URL override (tests); empty: https://<project>-default-rtdb.firebaseio.com"`
}

// Log settings.
type Log struct {
	Level string `koanf:"level" reload:"live" doc:"log level: debug, info, warn or error"`
}

// Paths are lmntd's own directories.
type Paths struct {
	StateDirectory   string `koanf:"state_directory" doc:"durable state: sealed key, token, job journal"`
	RuntimeDirectory string `koanf:"runtime_directory" doc:"sockets and other run-time files"`
}

// Seal selects how the printer key is protected at rest.
type Seal struct {
	Backend   string `koanf:"backend" doc:"key sealing: auto, tpm or software"`
	TPMDevice string `koanf:"tpm_device" doc:"TPM 2.0 resource manager device"`
	TPMPCRs   []int  `koanf:"tpm_pcrs" doc:"SHA-256 PCRs the sealed key is bound to (comma-separated; empty: none)"`
}

// Klipper is where Klipper runs and how lmntd talks to it.
type Klipper struct {
	User           string        `koanf:"user" doc:"the user Klipper runs as (the only uid allowed on the bridge socket)"`
	ConfigFile     string        `koanf:"config_file" doc:"Klipper's printer.cfg, read to check the lmntd sections"`
	BridgeSocket   string        `koanf:"bridge_socket" doc:"the bridge socket Klipper's extra connects to"`
	StatusInterval time.Duration `koanf:"status_interval" doc:"how often the extra sends status while printing (1s to 60s); while idle it sends changes and a heartbeat every minute"`
	GcodesDir      string        `koanf:"gcodes_dir" doc:"Klipper's [virtual_sdcard] path; the jobs' metadata stubs go in its .lmnt folder"`
	MetadataStub   bool          `koanf:"metadata_stub" doc:"write each job's metadata stub (slicer comments and thumbnails, no G-code) so Mainsail and Fluidd show its picture and estimates"`
	KeepStub       bool          `koanf:"keep_metadata_stub" doc:"keep a finished job's stub, so the print history keeps its thumbnail"`
}

// API is the local HTTP API.
type API struct {
	Socket         string         `koanf:"socket" doc:"unix socket of the local API"`
	Listen         string         `koanf:"listen" doc:"optional TCP listen address host:port (empty: off)"`
	TrustedClients []netip.Prefix `koanf:"trusted_clients" reload:"live" doc:"LAN client networks allowed on the TCP listener or through the proxy socket without an API key (comma-separated CIDRs; never loopback)"`
	APIKeyFile     string         `koanf:"api_key_file" doc:"file holding the API key for the TCP listener (mode 0600 or 0640)"`
	ProxySocket    string         `koanf:"proxy_socket" doc:"unix socket for the local web server (nginx), the only channel whose X-Forwarded-For counts (empty: off)"`
	ProxyGroup     string         `koanf:"proxy_group" doc:"group of the web server allowed on api.proxy_socket"`
	AllowedHosts   []string       `koanf:"allowed_hosts" reload:"live" doc:"host names browsers may use for the API besides localhost and this machine's names and addresses (comma-separated)"`
}

// Jobs controls how marketplace jobs start.
type Jobs struct {
	AutoStart    bool   `koanf:"auto_start" doc:"start jobs without the bed-clear confirmation (LMNT_READY)"`
	FilamentType string `koanf:"filament_type" reload:"live" doc:"loaded filament type (e.g. PLA) checked against jobs; empty: not checked"`
}

// Limits bound what one job may cost.
type Limits struct {
	MaxDownloadSize ByteSize `koanf:"max_download_size" reload:"live" doc:"largest G-code download accepted (e.g. 512MiB)"`
	// Local uploads wait in memory until they print: these bound how many
	// and how much, whoever sends them.
	MaxLocalJobs        int           `koanf:"max_local_jobs" reload:"live" doc:"most local print uploads waiting in memory at once (1 to 64)"`
	MaxLocalQueueSize   ByteSize      `koanf:"max_local_queue_size" reload:"live" doc:"total size of local print uploads waiting in memory (e.g. 256MiB)"`
	DownloadTimeout     time.Duration `koanf:"download_timeout" reload:"live" doc:"whole download must finish within this"`
	DownloadIdleTimeout time.Duration `koanf:"download_idle_timeout" reload:"live" doc:"abort a download that receives nothing for this long"`
	DownloadMinRate     ByteSize      `koanf:"download_min_rate" reload:"live" doc:"abort a download slower than this many bytes per second on average, once download_idle_timeout has passed"`
	RequestTimeout      time.Duration `koanf:"request_timeout" reload:"live" doc:"timeout of one marketplace API request"`
}

// Metrics are lmntd's Prometheus metrics: always on the API's /metrics,
// and optionally written for node_exporter's textfile collector.
type Metrics struct {
	Textfile         string        `koanf:"textfile" doc:"file (ending in .prom) lmntd keeps its metrics in for node_exporter's textfile collector, e.g. /var/lib/prometheus/node-exporter/lmntd.prom (empty: off)"`
	TextfileInterval time.Duration `koanf:"textfile_interval" doc:"how often metrics.textfile is rewritten (5s to 10m)"`
}

// Migration is the import of the old plugin's moonraker.conf settings.
type Migration struct {
	ImportMoonraker bool   `koanf:"import_moonraker" doc:"read [lmnt_marketplace_plugin] of the old plugin's moonraker.conf"`
	MoonrakerConf   string `koanf:"moonraker_conf" doc:"path of moonraker.conf (empty: next to klipper.config_file)"`
}

// Import records one setting taken from moonraker.conf.
type Import struct {
	Key    string `json:"key"`
	Source Source `json:"source"`
	Value  string `json:"value"`
}

// String renders the import the way lmnt doctor shows it.
func (i Import) String() string {
	return fmt.Sprintf("%s = %s imported from moonraker.conf (%s)", i.Key, i.Value, i.Source)
}

// Setting is one effective setting with where it came from.
type Setting struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source Source `json:"source"`
	// Live is true when a reload applies it without a restart.
	Live bool `json:"live"`
}

// Settings lists every setting in effect, sorted by key, for lmnt doctor and
// the status endpoint. The configuration holds no secrets, so all values can
// be shown.
func (c *Config) Settings() []Setting {
	flat := c.flatten()
	out := make([]Setting, len(schema))
	for i, f := range schema {
		out[i] = Setting{Key: f.key, Value: display(flat[f.key]), Source: c.Origin(f.key), Live: f.live}
	}
	return out
}

// Defaults returns the built-in configuration (marketplace.url still empty:
// it follows api_profile and is resolved by Load).
func Defaults() Config {
	return Config{
		APIProfile: ProfileAuto,
		Marketplace: Marketplace{
			CWSURL:        DefaultCWSURL,
			CheckInterval: 60 * time.Second,
			TokenHosts:    []string{},
		},
		Push:  Push{Enabled: true, FirebaseProjectID: "lmnt-prod"},
		Log:   Log{Level: "info"},
		Paths: Paths{StateDirectory: "/var/lib/lmntd", RuntimeDirectory: "/run/lmntd"},
		Seal:  Seal{Backend: "auto", TPMDevice: "/dev/tpmrm0", TPMPCRs: []int{}},
		Klipper: Klipper{
			User:           "pi",
			ConfigFile:     "/home/pi/printer_data/config/printer.cfg",
			BridgeSocket:   "/run/lmntd/klipper.sock",
			StatusInterval: 5 * time.Second,
			GcodesDir:      "/home/pi/printer_data/gcodes",
			MetadataStub:   true,
		},
		API: API{Socket: "/run/lmntd/api.sock", TrustedClients: []netip.Prefix{}, ProxyGroup: "www-data", AllowedHosts: []string{}},
		Limits: Limits{
			MaxDownloadSize:     512 * MiB,
			MaxLocalJobs:        4,
			MaxLocalQueueSize:   256 * MiB,
			DownloadTimeout:     30 * time.Minute,
			DownloadIdleTimeout: 60 * time.Second,
			DownloadMinRate:     16 * KiB,
			RequestTimeout:      30 * time.Second,
		},
		Migration: Migration{ImportMoonraker: true},
		Metrics:   Metrics{TextfileInterval: 15 * time.Second},
	}
}

// CheckInstanceName says what is wrong with an instance name, nil when it
// is a plain systemd instance name as KIAUH and MainsailOS use.
func CheckInstanceName(name string) error {
	if !instanceRE.MatchString(name) {
		return fmt.Errorf("%q is not an instance name: up to 32 letters, digits, '_' or '-', starting with a letter or digit, e.g. printer_1", name)
	}
	return nil
}

// InstanceConfigFile is the config file of the Klipper instance name on a
// host with several (lmntd@name.service).
func InstanceConfigFile(name string) string { return "/etc/lmntd/instances/" + name + ".toml" }

// InstanceDefaults are the defaults that differ for a named instance: its
// state under /var/lib/lmntd/instances (a sub-tree, so no name collides
// with the default instance's own files), its sockets in /run/lmntd/NAME,
// and Klipper's files in ~pi/NAME_data as KIAUH and MainsailOS lay out
// printer_1_data, printer_2_data…
func InstanceDefaults(name string) map[string]any {
	run := "/run/lmntd/" + name
	data := "/home/pi/" + name + "_data"
	return map[string]any{
		"paths.state_directory":   "/var/lib/lmntd/instances/" + name,
		"paths.runtime_directory": run,
		"api.socket":              run + "/api.sock",
		"klipper.bridge_socket":   run + "/klipper.sock",
		"klipper.config_file":     data + "/config/printer.cfg",
		"klipper.gcodes_dir":      data + "/gcodes",
	}
}

// Origin says where the value of key came from.
func (c *Config) Origin(key string) Source {
	if s, ok := c.origins[key]; ok {
		return s
	}
	return Source{Kind: SourceDefault}
}

// Imports lists the settings in effect that were taken from moonraker.conf,
// for lmnt doctor ("imported from moonraker.conf").
func (c *Config) Imports() []Import { return append([]Import(nil), c.imports...) }

// Notes are non-fatal remarks of the load (a missing default file, ignored
// moonraker.conf options), for logs and lmnt doctor.
func (c *Config) Notes() []string { return append([]string(nil), c.notes...) }

// File is the config file this configuration was read from ("" if none).
func (c *Config) File() string { return c.file }

// MoonrakerConfPath is the moonraker.conf to import from ("" when disabled).
func (c *Config) MoonrakerConfPath() string {
	if !c.Migration.ImportMoonraker {
		return ""
	}
	if c.Migration.MoonrakerConf != "" {
		return c.Migration.MoonrakerConf
	}
	return filepath.Join(filepath.Dir(c.Klipper.ConfigFile), "moonraker.conf")
}

// PushStreamURL is the push event stream base URL.
func (c *Config) PushStreamURL() string {
	if c.Push.BaseURL != "" {
		return c.Push.BaseURL
	}
	return "https://" + c.Push.FirebaseProjectID + "-default-rtdb.firebaseio.com"
}

// Keys lists every setting's dotted key, sorted.
func Keys() []string {
	out := make([]string, len(schema))
	for i, f := range schema {
		out[i] = f.key
	}
	return out
}

// LiveKeys lists the settings a running daemon applies on reload.
func LiveKeys() []string {
	var out []string
	for _, f := range schema {
		if f.live {
			out = append(out, f.key)
		}
	}
	return out
}

// EnvName is the environment variable that sets key.
func EnvName(key string) string { return "LMNTD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

// FlagName is the command-line flag (without "--") that sets key.
func FlagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// kind is how a setting's text is read.
type kind int

const (
	kindString kind = iota
	kindBool
	kindDuration
	kindSize
	kindPrefixes
	kindInts
	kindStrings
	kindInt
)

func (k kind) want() string {
	switch k {
	case kindString:
		return "a string"
	case kindBool:
		return "true or false"
	case kindDuration:
		return `a duration string such as "60s", "5m" or "1h30m"`
	case kindSize:
		return `a size such as "512MiB", "2GiB" or a number of bytes`
	case kindPrefixes:
		return `a list of IP addresses or CIDRs such as ["192.168.1.0/24", "fd00::/8"]`
	case kindInts:
		return "a list of integers such as [7]"
	case kindStrings:
		return `a list of strings such as ["printers.lmnt.co"]`
	case kindInt:
		return "an integer"
	}
	return "?"
}

// field is one setting of the schema derived from Config's tags.
type field struct {
	key   string
	index []int
	kind  kind
	live  bool
	doc   string
}

var (
	schema      = buildSchema()
	schemaByKey = func() map[string]*field {
		m := make(map[string]*field, len(schema))
		for _, f := range schema {
			m[f.key] = f
		}
		return m
	}()
	sectionNames = func() map[string]bool {
		m := map[string]bool{}
		for _, f := range schema {
			if i := strings.IndexByte(f.key, '.'); i > 0 {
				m[f.key[:i]] = true
			}
		}
		return m
	}()
)

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(ByteSize(0))
	prefixesType = reflect.TypeOf([]netip.Prefix(nil))
	intsType     = reflect.TypeOf([]int(nil))
	stringsType  = reflect.TypeOf([]string(nil))
)

func buildSchema() []*field {
	var out []*field
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			name := sf.Tag.Get("koanf")
			if name == "" || !sf.IsExported() {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			key := prefix + name
			if sf.Type.Kind() == reflect.Struct && sf.Type != durationType {
				walk(sf.Type, key+".", idx)
				continue
			}
			f := &field{key: key, index: idx, live: sf.Tag.Get("reload") == "live", doc: sf.Tag.Get("doc")}
			switch {
			case sf.Type == durationType:
				f.kind = kindDuration
			case sf.Type == sizeType:
				f.kind = kindSize
			case sf.Type == prefixesType:
				f.kind = kindPrefixes
			case sf.Type == intsType:
				f.kind = kindInts
			case sf.Type == stringsType:
				f.kind = kindStrings
			case sf.Type.Kind() == reflect.Int:
				f.kind = kindInt
			case sf.Type.Kind() == reflect.Bool:
				f.kind = kindBool
			case sf.Type.Kind() == reflect.String:
				f.kind = kindString
			default:
				panic(fmt.Sprintf("config: unsupported type %s for %s", sf.Type, key))
			}
			out = append(out, f)
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// canonical renders a typed field value in the form the layers use: strings
// for durations, sizes and prefixes (so koanf can copy them), []string and
// []int for lists.
func canonical(f *field, v reflect.Value) any {
	switch f.kind {
	case kindString:
		return v.String()
	case kindBool:
		return v.Bool()
	case kindDuration:
		return time.Duration(v.Int()).String()
	case kindSize:
		return ByteSize(v.Uint()).String()
	case kindPrefixes:
		ps := v.Interface().([]netip.Prefix)
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.String()
		}
		return out
	case kindInts:
		return append([]int{}, v.Interface().([]int)...)
	case kindStrings:
		return append([]string{}, v.Interface().([]string)...)
	case kindInt:
		return int(v.Int())
	}
	return nil
}

// flatten renders every setting of c canonically, keyed by dotted key.
func (c *Config) flatten() map[string]any {
	rv := reflect.ValueOf(c).Elem()
	out := make(map[string]any, len(schema))
	for _, f := range schema {
		out[f.key] = canonical(f, rv.FieldByIndex(f.index))
	}
	return out
}

// display renders a canonical value for messages and diffs.
func display(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case []string:
		return "[" + strings.Join(quoteAll(x), ", ") + "]"
	case []int:
		parts := make([]string, len(x))
		for i, n := range x {
			parts[i] = fmt.Sprint(n)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

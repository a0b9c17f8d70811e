package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// env builds an Environ func from KEY=value pairs.
func env(kv ...string) func() []string { return func() []string { return kv } }

// hermetic returns a TOML header that points the moonraker import at a path
// inside dir, so no test depends on the machine's /home/pi.
func hermetic(dir string) string {
	return "[migration]\nmoonraker_conf = \"" + filepath.Join(dir, "moonraker.conf") + "\"\n"
}

func mustLoad(t *testing.T, opts Options) *Config {
	t.Helper()
	cfg, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func examplePath(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "packaging", "lmntd.toml")
}

func TestShippedExampleLoadsAndDocumentsEveryKey(t *testing.T) {
	path := examplePath(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustLoad(t, Options{ConfigFile: path, Environ: env()})
	want := Defaults()
	want.Marketplace.URL = DefaultCurrentURL
	if got, w := cfg.flatten(), want.flatten(); !reflect.DeepEqual(got, w) {
		t.Errorf("shipped example (all commented) differs from defaults:\n got %v\nwant %v", got, w)
	}

	// Uncomment every "# key = value" line: the file must still load, set
	// every key of the struct, and document the real defaults.
	keyLine := regexp.MustCompile(`(?m)^# ([a-z_]+ = .*)$`)
	uncommented := keyLine.ReplaceAllString(string(data), "$1")
	p := testutil.WriteFile(t, t.TempDir(), "lmntd.toml", uncommented)
	full := mustLoad(t, Options{ConfigFile: p, Environ: env()})
	k := koanf.New(".")
	if err := k.Load(file.Provider(p), toml.Parser()); err != nil {
		t.Fatal(err)
	}
	fromFile := k.Keys()
	sort.Strings(fromFile)
	if !reflect.DeepEqual(fromFile, Keys()) {
		t.Errorf("keys documented in %s:\n %v\nkeys of Config:\n %v", path, fromFile, Keys())
	}
	if got, w := full.flatten(), want.flatten(); !reflect.DeepEqual(got, w) {
		t.Errorf("documented values differ from the built-in defaults:\n got %v\nwant %v", got, w)
	}
}

func TestEnvAndFlagNamesAreUnique(t *testing.T) {
	envs, flags := map[string]string{}, map[string]string{}
	for _, k := range Keys() {
		if other, dup := envs[EnvName(k)]; dup {
			t.Errorf("%s and %s share %s", k, other, EnvName(k))
		}
		envs[EnvName(k)] = k
		if other, dup := flags[FlagName(k)]; dup {
			t.Errorf("%s and %s share --%s", k, other, FlagName(k))
		}
		flags[FlagName(k)] = k
	}
}

func TestLayerPrecedence(t *testing.T) {
	dir := t.TempDir()
	mr := testutil.WriteFile(t, dir, "moonraker.conf", "[lmnt_marketplace_plugin]\ncheck_interval: 30\ncws_url: https://cws.example.org\n")
	_ = mr
	tests := []struct {
		name       string
		file       string // appended to the hermetic header
		env        []string
		flags      []string
		key        string
		want       any
		wantSource Source
	}{
		{"default", "", nil, nil, "log.level", `info`, Source{Kind: SourceDefault}},
		{"file over default", "[log]\nlevel = \"warn\"\n", nil, nil, "log.level", "warn",
			Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"moonraker over default", "", nil, nil, "marketplace.check_interval", "30s",
			Source{Kind: SourceMoonraker, Name: mr, Line: 2, Option: "check_interval"}},
		{"file beats moonraker", "[marketplace]\ncheck_interval = \"90s\"\n", nil, nil, "marketplace.check_interval", "1m30s",
			Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"env over moonraker", "", []string{"LMNTD_MARKETPLACE_CHECK_INTERVAL=45s"}, nil, "marketplace.check_interval", "45s",
			Source{Kind: SourceEnv, Name: "LMNTD_MARKETPLACE_CHECK_INTERVAL"}},
		{"env over file", "[log]\nlevel = \"warn\"\n", []string{"LMNTD_LOG_LEVEL=error"}, nil, "log.level", "error",
			Source{Kind: SourceEnv, Name: "LMNTD_LOG_LEVEL"}},
		{"flag over env", "[log]\nlevel = \"warn\"\n", []string{"LMNTD_LOG_LEVEL=error"}, []string{"--log-level=debug"}, "log.level", "debug",
			Source{Kind: SourceFlag, Name: "--log-level"}},
		{"unset flag does not override", "[log]\nlevel = \"warn\"\n", nil, []string{"--jobs-auto-start"}, "log.level", "warn",
			Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"bool flag", "", nil, []string{"--jobs-auto-start"}, "jobs.auto_start", true,
			Source{Kind: SourceFlag, Name: "--jobs-auto-start"}},
		{"list from env", "", []string{"LMNTD_API_TRUSTED_CLIENTS=192.168.1.0/24, fd00::7"}, nil, "api.trusted_clients",
			[]string{"192.168.1.0/24", "fd00::7/128"}, Source{Kind: SourceEnv, Name: "LMNTD_API_TRUSTED_CLIENTS"}},
		{"strings from file", "[api]\nallowed_hosts = [\"printer.example.com\", \"10.0.0.9\"]\n", nil, nil, "api.allowed_hosts",
			[]string{"printer.example.com", "10.0.0.9"}, Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"strings from flag", "", nil, []string{"--api-allowed-hosts=a.example, b.example"}, "api.allowed_hosts",
			[]string{"a.example", "b.example"}, Source{Kind: SourceFlag, Name: "--api-allowed-hosts"}},
		{"list from file", "[api]\ntrusted_clients = [\"10.0.0.7/8\"]\n", nil, nil, "api.trusted_clients",
			[]string{"10.0.0.0/8"}, Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"ints from flag", "", nil, []string{"--seal-tpm-pcrs=0,7"}, "seal.tpm_pcrs", []int{0, 7},
			Source{Kind: SourceFlag, Name: "--seal-tpm-pcrs"}},
		{"size from file as bytes", "[limits]\nmax_download_size = 2097152\n", nil, nil, "limits.max_download_size", "2MiB",
			Source{Kind: SourceFile, Name: filepath.Join(dir, "lmntd.toml")}},
		{"legacy profile changes the URL default", "api_profile = \"legacy\"\n", nil, nil, "marketplace.url", DefaultLegacyURL,
			Source{Kind: SourceDefault, Name: "api_profile legacy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Top-level keys must precede the first [table] in TOML.
			p := testutil.WriteFile(t, dir, "lmntd.toml", tc.file+"\n"+hermetic(dir))
			fs := pflag.NewFlagSet("lmntd", pflag.ContinueOnError)
			RegisterFlags(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			cfg := mustLoad(t, Options{ConfigFile: p, Environ: env(tc.env...), Flags: fs})
			if got := cfg.flatten()[tc.key]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s = %#v, want %#v", tc.key, got, tc.want)
			}
			if got := cfg.Origin(tc.key); got != tc.wantSource {
				t.Errorf("Origin(%s) = %+v, want %+v", tc.key, got, tc.wantSource)
			}
		})
	}
}

func TestConfigFileSelection(t *testing.T) {
	dir := t.TempDir()
	a := testutil.WriteFile(t, dir, "a.toml", "[log]\nlevel = \"warn\"\n"+hermetic(dir))
	b := testutil.WriteFile(t, dir, "b.toml", "[log]\nlevel = \"error\"\n"+hermetic(dir))
	fs := pflag.NewFlagSet("lmntd", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", b}); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, Options{ConfigFile: a, Environ: env()}).Log.Level; got != "warn" {
		t.Errorf("Options.ConfigFile: level %q", got)
	}
	if got := mustLoad(t, Options{ConfigFile: a, Environ: env(ConfigFileEnv + "=" + b)}).Log.Level; got != "error" {
		t.Errorf("LMNTD_CONFIG: level %q", got)
	}
	cfg := mustLoad(t, Options{ConfigFile: a, Environ: env(ConfigFileEnv + "=" + a), Flags: fs})
	if cfg.Log.Level != "error" || cfg.File() != b {
		t.Errorf("--config: level %q from %q", cfg.Log.Level, cfg.File())
	}
	// A named file that is missing is an error; the default one is not.
	_, err := Load(Options{ConfigFile: filepath.Join(dir, "missing.toml"), Environ: env()})
	if !errors.Is(err, ErrUnreadableFile) || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing explicit file: %v", err)
	}
}

func TestMoonrakerImport(t *testing.T) {
	// A real-looking moonraker.conf from a printer that ran the old plugin.
	const moonrakerConf = `# moonraker.conf — MainsailOS
[server]
host: 0.0.0.0
port: 7125
klippy_uds_address: ~/printer_data/comms/klippy.sock

[authorization]
trusted_clients:
    10.0.0.0/8
    127.0.0.0/8
    169.254.0.0/16
    # a comment between continuation lines
    192.168.0.0/16
cors_domains:
	*.lan
	*.local

[octoprint_compat]

[history]

[update_manager]
channel: dev
refresh_interval: 168

[include moonraker-obico-update.cfg]

[lmnt_marketplace_plugin]
# the old plugin's settings
marketplace_url: https://api.lmnt.market   # production
cws_url = https://cws.lmnt.market ; inline comment after a space
CHECK_INTERVAL: 120
debug_mode: True
firebase_project_id: lmnt-dev
printer_name: Voron 2.4
  continued on the next line

[encrypted_print]
`
	dir := t.TempDir()
	mr := testutil.WriteFile(t, dir, "moonraker.conf", moonrakerConf)
	cfgFile := testutil.WriteFile(t, dir, "lmntd.toml", "[push]\nfirebase_project_id = \"lmnt-prod\"\n"+hermetic(dir))
	cfg := mustLoad(t, Options{ConfigFile: cfgFile, Environ: env("LMNTD_LOG_LEVEL=warn")})

	if cfg.Marketplace.URL != "https://api.lmnt.market" || cfg.Marketplace.CWSURL != "https://cws.lmnt.market" ||
		cfg.Marketplace.CheckInterval != 2*time.Minute {
		t.Errorf("imported values: %+v", cfg.Marketplace)
	}
	if cfg.Push.FirebaseProjectID != "lmnt-prod" {
		t.Errorf("firebase_project_id set in lmntd.toml was overridden by moonraker.conf: %q", cfg.Push.FirebaseProjectID)
	}
	if cfg.Log.Level != "warn" {
		t.Errorf("environment must beat the import: log.level %q", cfg.Log.Level)
	}
	var got []string
	for _, imp := range cfg.Imports() {
		got = append(got, imp.Key+"="+imp.Value+"@"+imp.Source.String())
	}
	want := []string{
		`marketplace.check_interval="2m0s"@` + mr + `:32 [lmnt_marketplace_plugin] check_interval`,
		`marketplace.cws_url="https://cws.lmnt.market"@` + mr + `:31 [lmnt_marketplace_plugin] cws_url`,
		`marketplace.url="https://api.lmnt.market"@` + mr + `:30 [lmnt_marketplace_plugin] marketplace_url`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Imports:\n got %q\nwant %q", got, want)
	}
	if got := cfg.Imports()[0].String(); got != `marketplace.check_interval = "2m0s" imported from moonraker.conf (`+mr+`:32 [lmnt_marketplace_plugin] check_interval)` {
		t.Errorf("Import.String = %q", got)
	}
	settings := cfg.Settings()
	if len(settings) != len(Keys()) {
		t.Fatalf("Settings has %d entries", len(settings))
	}
	for _, st := range settings {
		if st.Key == "marketplace.check_interval" && (st.Value != `"2m0s"` || st.Source.Kind != SourceMoonraker || !st.Live) {
			t.Errorf("setting %+v", st)
		}
		if st.Key == "log.level" && (st.Value != `"warn"` || st.Source.Kind != SourceEnv) {
			t.Errorf("setting %+v", st)
		}
	}
	notes := strings.Join(cfg.Notes(), "\n")
	for _, w := range []string{"firebase_project_id: not imported, push.firebase_project_id is set in the config file", "printer_name is not used by lmntd"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
}

func TestMoonrakerImportDisabledAndMissing(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "moonraker.conf", "[lmnt_marketplace_plugin]\ncheck_interval: 120\n")
	p := testutil.WriteFile(t, dir, "lmntd.toml", hermetic(dir)+"import_moonraker = false\n")
	if cfg := mustLoad(t, Options{ConfigFile: p, Environ: env()}); len(cfg.Imports()) != 0 || cfg.Marketplace.CheckInterval != time.Minute {
		t.Errorf("import disabled but imported %v", cfg.Imports())
	}
	// Default location: next to klipper.config_file.
	p = testutil.WriteFile(t, dir, "lmntd2.toml", "[klipper]\nconfig_file = \""+filepath.Join(dir, "printer.cfg")+"\"\n")
	if cfg := mustLoad(t, Options{ConfigFile: p, Environ: env()}); cfg.Marketplace.CheckInterval != 2*time.Minute {
		t.Errorf("moonraker.conf next to printer.cfg not imported: %v", cfg.Marketplace.CheckInterval)
	}
	// No moonraker.conf at all is fine.
	empty := t.TempDir()
	p = testutil.WriteFile(t, empty, "lmntd.toml", hermetic(empty))
	if cfg := mustLoad(t, Options{ConfigFile: p, Environ: env()}); len(cfg.Imports()) != 0 {
		t.Errorf("imports without moonraker.conf: %v", cfg.Imports())
	}
}

func TestParseMoonrakerConf(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string // "section/option" -> value
		wantErr string
	}{
		{"colon and equals", "[s]\na: 1\nb = 2\nc:3\n", map[string]string{"s/a": "1", "s/b": "2", "s/c": "3"}, ""},
		{"first delimiter wins", "[s]\nurl: http://x:8080/a=b\n", map[string]string{"s/url": "http://x:8080/a=b"}, ""},
		{"case-insensitive keys", "[s]\nMarketPlace_URL: x\n", map[string]string{"s/marketplace_url": "x"}, ""},
		{"inline comments need a space", "[s]\na: v#1 # c\nb: v;2 ; c\n", map[string]string{"s/a": "v#1", "s/b": "v;2"}, ""},
		{"escaped comment prefix kept", "[s]\na: x \\# y\n", map[string]string{"s/a": "x # y"}, ""},
		{"continuation lines", "[s]\na:\n  one\n  two\n\n  three\nb: 2\n", map[string]string{"s/a": "\none\ntwo\nthree", "s/b": "2"}, ""},
		{"tab continuation", "[s]\na: x\n\ty\n", map[string]string{"s/a": "x\ny"}, ""},
		{"repeated section merges, later wins", "[s]\na: 1\nb: 1\n[t]\n[s]\na: 2\n", map[string]string{"s/a": "2", "s/b": "1"}, ""},
		{"include not followed, section after it", "[s]\na: 1\n[include other.cfg]\n[t]\nb: 2\n", map[string]string{"s/a": "1", "t/b": "2"}, ""},
		{"option after include without section", "[s]\na: 1\n[include other.cfg]\nb: 2\n", nil, "line 4: option outside any [section]"},
		{"no section", "a: 1\n", nil, "line 1: option outside any [section]"},
		{"not an option", "[s]\njust words\n", nil, `line 2: not an option line`},
		{"CRLF", "[s]\r\na: 1\r\n", map[string]string{"s/a": "1"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secs, _, err := parseMoonrakerConf([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, s := range secs {
				for _, o := range s.Options {
					got[s.Name+"/"+o.Name] = o.Value
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lmntd.toml")
	badCA := testutil.WriteFile(t, dir, "ca.pem", "not a certificate\n")
	openKey := testutil.WriteFile(t, dir, "open.key", "s3cret\n")
	if err := os.Chmod(openKey, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   string
		env    []string
		mrconf string
		class  error
		want   string // the whole error line
	}{
		{"unknown key", "[marketplace]\ncheck_intervall = \"60s\"\n", nil, "", ErrUnknownKey,
			cfgPath + `: marketplace.check_intervall: not a setting of lmntd (allowed: the keys listed in /etc/lmntd/lmntd.toml)`},
		{"unknown key with suggestion", "[limits]\nlevel = \"debug\"\n", nil, "", ErrUnknownKey,
			cfgPath + `: limits.level: not a setting of lmntd (did you mean log.level?) (allowed: the keys listed in /etc/lmntd/lmntd.toml)`},
		{"section given a value", "klipper = \"pi\"\n", nil, "", ErrUnknownKey,
			cfgPath + `: klipper: not a setting of lmntd (klipper is a [section], not a value) (allowed: the keys listed in /etc/lmntd/lmntd.toml)`},
		{"unknown env var", "", []string{"LMNTD_KLIPPER_USR=pi"}, "", ErrUnknownKey,
			`environment variable LMNTD_KLIPPER_USR: not an lmntd setting (allowed: LMNTD_<SECTION>_<KEY> for a key of /etc/lmntd/lmntd.toml, e.g. LMNTD_MARKETPLACE_CHECK_INTERVAL)`},
		{"wrong type: integer duration", "[marketplace]\ncheck_interval = 60\n", nil, "", ErrWrongType,
			cfgPath + `: marketplace.check_interval: got integer 60 (allowed: a duration string such as "60s", "5m" or "1h30m")`},
		{"wrong type: bool as string", "[jobs]\nauto_start = \"yes\"\n", nil, "", ErrWrongType,
			cfgPath + `: jobs.auto_start: got string "yes" (allowed: true or false)`},
		{"wrong type: env bool", "", []string{"LMNTD_PUSH_ENABLED=maybe"}, "", ErrWrongType,
			`environment variable LMNTD_PUSH_ENABLED: push.enabled: got string "maybe" (allowed: true or false)`},
		{"wrong type: bad duration", "[limits]\nrequest_timeout = \"30 seconds\"\n", nil, "", ErrWrongType,
			cfgPath + `: limits.request_timeout: "30 seconds" is not a duration (allowed: a duration string such as "60s", "5m" or "1h30m")`},
		{"bad CIDR", "[api]\ntrusted_clients = [\"192.168.1.0/33\"]\n", nil, "", ErrWrongType,
			cfgPath + `: api.trusted_clients: "192.168.1.0/33" is not an IP address or CIDR (allowed: a list of IP addresses or CIDRs such as ["192.168.1.0/24", "fd00::/8"])`},
		{"bad allowed host", "[api]\nallowed_hosts = [\"http://printer.lan:80\"]\n", nil, "", ErrInvalidValue,
			cfgPath + `: api.allowed_hosts: "http://printer.lan:80" is not a host name or IP address (allowed: host names such as printer.example.com or IP addresses, without scheme or port)`},
		{"bad proxy group", "[api]\nproxy_group = \"www data\"\n", nil, "", ErrInvalidValue,
			cfgPath + `: api.proxy_group: "www data" is not a group name (allowed: the web server's group, e.g. www-data)`},
		{"out of range interval", "[marketplace]\ncheck_interval = \"2s\"\n", nil, "", ErrOutOfRange,
			cfgPath + `: marketplace.check_interval: 2s is out of range (allowed: 5s to 1h0m0s, or 0s for push only)`},
		{"out of range size", "[limits]\nmax_download_size = \"100GiB\"\n", nil, "", ErrOutOfRange,
			cfgPath + `: limits.max_download_size: 100GiB is out of range (allowed: 1MiB to 16GiB)`},
		{"no local jobs", "[limits]\nmax_local_jobs = 0\n", nil, "", ErrOutOfRange,
			cfgPath + `: limits.max_local_jobs: 0 is out of range (allowed: 1 to 64)`},
		{"local jobs not a number", "[limits]\nmax_local_jobs = \"many\"\n", nil, "", ErrWrongType,
			cfgPath + `: limits.max_local_jobs: got string "many" (allowed: an integer)`},
		{"local queue too small", "[limits]\nmax_local_queue_size = \"512KiB\"\n", nil, "", ErrOutOfRange,
			cfgPath + `: limits.max_local_queue_size: 512KiB is out of range (allowed: 1MiB to 16GiB)`},
		{"out of range PCR", "[seal]\ntpm_pcrs = [24]\n", nil, "", ErrOutOfRange,
			cfgPath + `: seal.tpm_pcrs: PCR 24 does not exist (allowed: PCR numbers 0 to 23)`},
		{"idle longer than total", "[limits]\ndownload_timeout = \"1m\"\ndownload_idle_timeout = \"2m\"\n", nil, "", ErrOutOfRange,
			cfgPath + `: limits.download_idle_timeout: 2m0s is longer than limits.download_timeout (1m0s) (allowed: at most limits.download_timeout)`},
		{"bad profile", "api_profile = \"2025\"\n", nil, "", ErrInvalidValue,
			cfgPath + `: api_profile: "2025" is not a valid choice (allowed: auto, current, legacy)`},
		{"storage host as token host", "[marketplace]\ntoken_hosts = [\"printers.lmnt.co\", \"firebasestorage.googleapis.com\"]\n", nil, "", ErrInvalidValue,
			cfgPath + `: marketplace.token_hosts: "firebasestorage.googleapis.com" is a storage host: the printer token never goes there`},
		{"token host with a scheme", "[marketplace]\ntoken_hosts = [\"https://printers.lmnt.co\"]\n", nil, "", ErrInvalidValue,
			cfgPath + `: marketplace.token_hosts: "https://printers.lmnt.co" is not a host or host:port`},
		{"bad choice", "[seal]\nbackend = \"hsm\"\n", nil, "", ErrInvalidValue,
			cfgPath + `: seal.backend: "hsm" is not a valid choice (allowed: auto, tpm, software)`},
		{"relative path", "[paths]\nstate_directory = \"var/lib/lmntd\"\n", nil, "", ErrInvalidValue,
			cfgPath + `: paths.state_directory: "var/lib/lmntd" is not an absolute path (allowed: an absolute path)`},
		{"bad listen", "[api]\nlisten = \"0.0.0.0:99999\"\n", nil, "", ErrInvalidValue,
			cfgPath + `: api.listen: port "99999" is not 1 to 65535 (allowed: host:port such as "0.0.0.0:7130" or "[::]:7130", or empty for off)`},
		{"plain http outside loopback", "[marketplace]\nurl = \"http://192.168.1.215:8088\"\n", nil, "", ErrInsecureURL,
			cfgPath + `: marketplace.url: plain http to 192.168.1.215:8088 is not allowed outside loopback (allowed: an https:// URL (http:// only for loopback hosts or with development_mode = true), without user, query or fragment)`},
		{"credentials in URL", "[push]\nbase_url = \"https://user:hunter2@example.org\"\n", nil, "", ErrSecretInConfig,
			cfgPath + `: push.base_url: credentials in URLs are not allowed (they would end up in logs) (allowed: ` + secretHint + `)`},
		{"secret key in file", "[marketplace]\ntoken = \"eyJhbGciOi\"\n", nil, "", ErrSecretInConfig,
			cfgPath + `: marketplace.token: secrets are never kept in the configuration (allowed: ` + secretHint + `)`},
		{"secret in env", "", []string{"LMNTD_PRINTER_TOKEN=eyJ"}, "", ErrSecretInConfig,
			`environment variable LMNTD_PRINTER_TOKEN: secrets are never passed in the environment (other processes can read it) (allowed: ` + secretHint + `)`},
		{"unreadable CA file", "[marketplace]\ntls_ca_file = \"" + badCA + "\"\n", nil, "", ErrUnreadableFile,
			cfgPath + `: marketplace.tls_ca_file: contains no PEM certificate (allowed: a readable PEM file with at least one CA certificate)`},
		{"missing CA file", "[marketplace]\ntls_ca_file = \"" + dir + "/nope.pem\"\n", nil, "", ErrUnreadableFile,
			cfgPath + `: marketplace.tls_ca_file: cannot read: no such file or directory (allowed: a readable PEM file with at least one CA certificate)`},
		{"world-readable API key", "[api]\napi_key_file = \"" + openKey + "\"\n", nil, "", ErrUnreadableFile,
			cfgPath + `: api.api_key_file: mode 0644 lets every user read the API key (allowed: a readable, non-empty file not readable by others (mode 0600 or 0640))`},
		{"TOML syntax", "[log\nlevel = 1\n", nil, "", ErrSyntax, cfgPath + `:1:5: TOML syntax error: `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "moonraker.conf"))
			if tc.mrconf != "" {
				testutil.WriteFile(t, dir, "moonraker.conf", tc.mrconf)
			}
			// Top-level keys and sections first, migration last.
			testutil.WriteFile(t, dir, "lmntd.toml", tc.file+"\n"+hermetic(dir))
			_, err := Load(Options{ConfigFile: cfgPath, Environ: env(tc.env...)})
			if err == nil {
				t.Fatal("Load accepted the configuration")
			}
			if !errors.Is(err, tc.class) {
				t.Errorf("errors.Is(err, %v) = false; err: %v", tc.class, err)
			}
			fes := FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("want exactly one problem, got %d:\n%v", len(fes), err)
			}
			if !strings.HasPrefix(fes[0].Error(), tc.want) {
				t.Errorf("message:\n got %s\nwant %s", fes[0].Error(), tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "eyJ") {
				t.Errorf("error message repeats a secret: %v", err)
			}
		})
	}
}

// TestLoopbackTrustIgnoredNotFatal: a trusted_clients entry that admits
// loopback would give every local user the API (issue 15), so it is never
// honoured; it is reported (doctor names the file and key) but does not stop
// lmntd, since an older example suggested it and an unattended upgrade must
// not leave the printer offline.
func TestLoopbackTrustIgnoredNotFatal(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lmntd.toml")
	for _, tc := range []struct {
		name, file string
		env        []string
		source     string
		dropped    []string
		kept       []string
	}{
		{"file", "[api]\ntrusted_clients = [\"192.168.1.0/24\", \"127.0.0.1\"]\n", nil, cfgPath,
			[]string{"127.0.0.1/32"}, []string{"192.168.1.0/24"}},
		{"everyone from env", "", []string{"LMNTD_API_TRUSTED_CLIENTS=::/0, 10.0.0.0/8"}, "environment variable LMNTD_API_TRUSTED_CLIENTS",
			[]string{"::/0"}, []string{"10.0.0.0/8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.WriteFile(t, dir, "lmntd.toml", tc.file+"\n"+hermetic(dir))
			cfg, err := Load(Options{ConfigFile: cfgPath, Environ: env(tc.env...)})
			if err != nil {
				t.Fatalf("Load refused the configuration: %v", err)
			}
			var kept []string
			for _, p := range cfg.API.TrustedClients {
				kept = append(kept, p.String())
			}
			if !slices.Equal(kept, tc.kept) {
				t.Errorf("trusted_clients in effect %v, want %v", kept, tc.kept)
			}
			deg := cfg.Degraded()
			if len(deg) != len(tc.dropped) {
				t.Fatalf("degraded %v, want one entry per dropped prefix %v", deg, tc.dropped)
			}
			for i, fe := range deg {
				msg := fe.Error()
				if fe.Key != "api.trusted_clients" || !errors.Is(fe, ErrInvalidValue) ||
					!strings.HasPrefix(msg, tc.source+": api.trusted_clients: "+tc.dropped[i]+" includes loopback addresses") {
					t.Errorf("degraded entry %q does not name the source, key and prefix", msg)
				}
			}
		})
	}
}

func TestSeveralErrorsReportedAtOnce(t *testing.T) {
	dir := t.TempDir()
	p := testutil.WriteFile(t, dir, "lmntd.toml", "api_profile = \"beta\"\n[log]\nlevel = \"loud\"\n[limits]\nrequest_timeout = 5\n"+hermetic(dir))
	_, err := Load(Options{ConfigFile: p, Environ: env("LMNTD_KLIPPER_STATUS_INTERVAL=0s", "LMNTD_NOPE=1")})
	lines := strings.Split(err.Error(), "\n")
	want := []string{"LMNTD_NOPE", "limits.request_timeout", "api_profile", "log.level", "klipper.status_interval"}
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got:\n%v", len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %s in:\n%v", w, err)
		}
	}
	for _, l := range lines {
		if strings.Count(l, ": ") < 1 || strings.Contains(l, "\n") {
			t.Errorf("not one problem per line: %q", l)
		}
	}
}

func TestDevelopmentModeAndLoopbackAllowHTTP(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ file string }{
		{"[marketplace]\nurl = \"http://127.0.0.1:8088\"\n"},
		{"[marketplace]\nurl = \"http://[::1]:8088\"\n"},
		{"[marketplace]\nurl = \"http://localhost:8088\"\n"},
		{"development_mode = true\n[marketplace]\nurl = \"http://192.168.1.215:8088\"\n"},
	} {
		p := testutil.WriteFile(t, dir, "lmntd.toml", tc.file+hermetic(dir))
		mustLoad(t, Options{ConfigFile: p, Environ: env()})
	}
}

func TestDiffMarksRestartKeys(t *testing.T) {
	a := Defaults()
	b := Defaults()
	b.Log.Level = "debug"
	b.Klipper.User = "biqu"
	got := Diff(&a, &b)
	want := []Change{
		{Key: "klipper.user", Old: `"pi"`, New: `"biqu"`, Restart: true},
		{Key: "log.level", Old: `"info"`, New: `"debug"`, Restart: false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %+v, want %+v", got, want)
	}
	live := LiveKeys()
	sort.Strings(live)
	wantLive := []string{"api.allowed_hosts", "api.trusted_clients", "jobs.filament_type", "limits.download_idle_timeout", "limits.download_min_rate", "limits.download_timeout",
		"limits.max_download_size", "limits.max_local_jobs", "limits.max_local_queue_size", "limits.request_timeout", "log.level", "marketplace.check_interval"}
	if !reflect.DeepEqual(live, wantLive) {
		t.Errorf("LiveKeys = %v", live)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"512MiB": 512 * MiB, "1.5GiB": 3 * GiB / 2, "100MB": 100e6, "4096": 4096, "2g": 2 * GiB, "10 KiB": 10 * KiB} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "lots"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", in)
		}
	}
}

// The drop-in directory beside the config file: read after it in name order,
// each file overriding the ones before it key by key, with every value's
// origin and every error naming the drop-in it came from.
func TestDropInDirectory(t *testing.T) {
	dir := t.TempDir()
	main := testutil.WriteFile(t, dir, "lmntd.toml", "[log]\nlevel = \"warn\"\n[klipper]\nuser = \"owner\"\n"+hermetic(dir))
	d := DropInDir(main)
	image := testutil.WriteFile(t, d, "10-image.toml", "[klipper]\nuser = \"pi\"\n[jobs]\nauto_start = true\n")
	setupFile := testutil.WriteFile(t, d, "50-setup.toml", "[klipper]\nuser = \"biqu\"\n")
	testutil.WriteFile(t, d, "60-ignored.toml.dpkg-old", "[log]\nlevel = \"nonsense\"\n")
	testutil.WriteFile(t, d, ".70-partial.toml", "[log]\nlevel = \"nonsense\"\n")
	cfg := mustLoad(t, Options{ConfigFile: main, Environ: env()})
	for key, want := range map[string]Source{
		"log.level":       {Kind: SourceFile, Name: main},
		"jobs.auto_start": {Kind: SourceFile, Name: image},
		"klipper.user":    {Kind: SourceFile, Name: setupFile},
	} {
		if got := cfg.Origin(key); got != want {
			t.Errorf("Origin(%s) = %+v, want %+v", key, got, want)
		}
	}
	if cfg.Klipper.User != "biqu" || !cfg.Jobs.AutoStart || cfg.Log.Level != "warn" {
		t.Errorf("merged: klipper.user %q, jobs.auto_start %v, log.level %q", cfg.Klipper.User, cfg.Jobs.AutoStart, cfg.Log.Level)
	}
	// The environment still beats every file.
	if got := mustLoad(t, Options{ConfigFile: main, Environ: env("LMNTD_KLIPPER_USER=env")}).Klipper.User; got != "env" {
		t.Errorf("LMNTD_KLIPPER_USER over the drop-ins: %q", got)
	}
	// A bad drop-in is reported with its own path and key.
	bad := testutil.WriteFile(t, d, "40-bad.toml", "[jobs]\nauto_sart = true\n")
	_, err := Load(Options{ConfigFile: main, Environ: env()})
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "jobs.auto_sart") {
		t.Errorf("bad drop-in: %v", err)
	}
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// The update_manager block the old plugin's installer appends (every
// version of scripts/install.sh), with Moonraker's indented list values.
const updateManagerBlock = `
[update_manager lmnt_marketplace]
type: git_repo
path: /home/pi/lmnt_marketplace_plugin
origin: https://github.com/djsplice/lmnt_marketplace_plugin.git
primary_branch: main
env: /home/pi/moonraker-env/bin/python
requirements: requirements.txt
install_script: scripts/install.sh
is_system_service: False
info_tags:
  desc: LMNT Marketplace Plugin
  channel: stable
  notes: https://github.com/djsplice/lmnt_marketplace_plugin/blob/main/CHANGELOG.md
managed_services:
    moonraker
    klipper
`

// Every [lmnt_marketplace_plugin] block the old plugin's installer, README
// and docs ever wrote (seed era and current), and what inline comments and
// hand edits make of them. lmntd must start with each; Imports and
// Degraded are what lmnt doctor shows.
func TestEveryMoonrakerBlockTheOldPluginWrote(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		profile    string // the api_profile decision ("" ⇒ probe at start)
		url        string
		interval   time.Duration
		pushOnly   bool
		level      string
		imports    []string // key=value of every import
		degraded   []string // "line option: key" of every unusable import
	}{
		{
			name: "seed README, installation step (the developer's LAN server)",
			conf: "[server]\nhost: 0.0.0.0\n\n[lmnt_marketplace_plugin]\nmarketplace_url: http://192.168.1.215:8088\ncws_url: http://192.168.1.215:8080\n[encrypted_print]\n",
			// Plain http outside loopback without development_mode has no
			// safe meaning: not imported, named by doctor; the era is still
			// told by cws_url.
			profile: ProfileLegacy, url: DefaultLegacyURL, interval: time.Minute, level: "info",
			degraded: []string{"5 marketplace_url: marketplace.url", "6 cws_url: marketplace.cws_url"},
		},
		{
			name:    "seed README, configuration section",
			conf:    "[lmnt_marketplace_plugin]\ncheck_interval: 60\ndebug_mode: False\nmarketplace_url: https://api.lmnt.market\ncws_url: https://cws.lmnt.market\n",
			profile: ProfileLegacy, url: "https://api.lmnt.market", interval: time.Minute, level: "info",
			imports: []string{`marketplace.check_interval="1m0s"`, `marketplace.cws_url="https://cws.lmnt.market"`, `marketplace.url="https://api.lmnt.market"`},
		},
		{
			name:    "seed era on a LAN server with development_mode",
			conf:    "[lmnt_marketplace_plugin]\nmarketplace_url: http://192.168.1.215:8088\ncws_url: http://192.168.1.215:8080\ndevelopment_mode: True\n",
			profile: ProfileLegacy, url: "http://192.168.1.215:8088", interval: time.Minute, level: "info",
			imports: []string{`development_mode=true`, `marketplace.cws_url="http://192.168.1.215:8080"`, `marketplace.url="http://192.168.1.215:8088"`},
		},
		{
			name: "install.sh v2.0.0 to today",
			conf: "[server]\nhost: 0.0.0.0\n\n# LMNT Marketplace Plugin configuration\n[lmnt_marketplace_plugin]\nmarketplace_url: https://api.lmnt.co\nfirebase_project_id: lmnt-prod\ncheck_interval: 0\n\n[encrypted_print]\n" +
				"\n[update_manager]\nchannel: dev\n" + updateManagerBlock,
			profile: ProfileCurrent, url: "https://api.lmnt.co", pushOnly: true, level: "info",
			imports: []string{`marketplace.check_interval="0s"`, `marketplace.url="https://api.lmnt.co"`, `push.firebase_project_id="lmnt-prod"`},
		},
		{
			name:    "README v2.0.0 to today",
			conf:    "[lmnt_marketplace_plugin]\ncheck_interval: 0\ndebug_mode: False\ndevelopment_mode: False\nmarketplace_url: https://api.lmnt.co\nfirebase_project_id: lmnt-prod\n",
			profile: ProfileCurrent, url: "https://api.lmnt.co", pushOnly: true, level: "info",
			imports: []string{`development_mode=false`, `marketplace.check_interval="0s"`, `marketplace.url="https://api.lmnt.co"`, `push.firebase_project_id="lmnt-prod"`},
		},
		{
			name: "docs/installation.md v2.0.0 (printers.lmnt.co, lmnt-dev)",
			conf: "[lmnt_marketplace_plugin]\nmarketplace_url: https://printers.lmnt.co\nfirebase_project_id: lmnt-dev\ncheck_interval: 0\n\n[encrypted_print]\n" +
				strings.ReplaceAll(updateManagerBlock, "/home/pi", "~"),
			profile: ProfileCurrent, url: "https://printers.lmnt.co", pushOnly: true, level: "info",
			imports: []string{`marketplace.check_interval="0s"`, `marketplace.url="https://printers.lmnt.co"`, `push.firebase_project_id="lmnt-dev"`},
		},
		{
			name:    "switch_env.sh dev",
			conf:    "[lmnt_marketplace_plugin]\nmarketplace_url: https://dev-api.lmnt.co\nfirebase_project_id: lmnt-dev\ncheck_interval: 0\n",
			profile: ProfileCurrent, url: "https://dev-api.lmnt.co", pushOnly: true, level: "info",
			imports: []string{`marketplace.check_interval="0s"`, `marketplace.url="https://dev-api.lmnt.co"`, `push.firebase_project_id="lmnt-dev"`},
		},
		{
			name:    "install.sh fallback: empty section",
			conf:    "[lmnt_marketplace_plugin]\n\n[encrypted_print]\n",
			profile: ProfileCurrent, url: DefaultCurrentURL, interval: time.Minute, level: "info",
		},
		{
			name:    "inline comments",
			conf:    "[lmnt_marketplace_plugin]\ncheck_interval: 0   # push only\nmarketplace_url: https://api.lmnt.co ; production\ndebug_mode: True # verbose\nfirebase_project_id: lmnt-prod\n",
			profile: ProfileCurrent, url: "https://api.lmnt.co", pushOnly: true, level: "debug",
			imports: []string{`log.level="debug"`, `marketplace.check_interval="0s"`, `marketplace.url="https://api.lmnt.co"`, `push.firebase_project_id="lmnt-prod"`},
		},
		{
			name:    "hand edits with a sane meaning",
			conf:    "[lmnt_marketplace_plugin]\nmarketplace_url: https://api.lmnt.co\ncheck_interval: -1\n",
			profile: ProfileCurrent, url: "https://api.lmnt.co", pushOnly: true, level: "info",
			imports: []string{`marketplace.check_interval="0s"`, `marketplace.url="https://api.lmnt.co"`},
		},
		{
			name:    "too short an interval is clamped",
			conf:    "[lmnt_marketplace_plugin]\ncheck_interval: 2\n",
			profile: ProfileCurrent, url: DefaultCurrentURL, interval: MinCheckInterval, level: "info",
			imports: []string{`marketplace.check_interval="5s"`},
		},
		{
			name:    "hand edits without a sane meaning",
			conf:    "[lmnt_marketplace_plugin]\nmarketplace_url: https://marketplace.example\ncheck_interval: often\ndebug_mode: maybe\nfirebase_project_id: LMNT PROD\n",
			profile: ProfileCurrent, url: "https://marketplace.example", interval: time.Minute, level: "info",
			imports:  []string{`marketplace.url="https://marketplace.example"`},
			degraded: []string{"3 check_interval: marketplace.check_interval", "4 debug_mode: log.level", "5 firebase_project_id: push.firebase_project_id"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mr := testutil.WriteFile(t, dir, "moonraker.conf", tc.conf)
			cfg := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, dir, "lmntd.toml", hermetic(dir)), Environ: env()})
			if got := cfg.Profile().Profile; got != tc.profile {
				t.Errorf("profile %q (%s), want %q", got, cfg.Profile().Reason, tc.profile)
			}
			if cfg.Profile().Reason == "" {
				t.Error("no reason given for the profile")
			}
			if cfg.Marketplace.URL != tc.url || cfg.PushOnly() != tc.pushOnly || cfg.Log.Level != tc.level {
				t.Errorf("url %s push only %v level %s", cfg.Marketplace.URL, cfg.PushOnly(), cfg.Log.Level)
			}
			if !tc.pushOnly && cfg.Marketplace.CheckInterval != tc.interval {
				t.Errorf("check_interval %v, want %v", cfg.Marketplace.CheckInterval, tc.interval)
			}
			var imports []string
			for _, im := range cfg.Imports() {
				imports = append(imports, im.Key+"="+im.Value)
				if !strings.HasPrefix(im.String(), im.Key+" = "+im.Value+" imported from moonraker.conf ("+mr+":") {
					t.Errorf("doctor line %q", im.String())
				}
			}
			if !slices.Equal(imports, tc.imports) {
				t.Errorf("imports %q, want %q", imports, tc.imports)
			}
			var degraded []string
			for _, fe := range cfg.Degraded() {
				degraded = append(degraded, strings.TrimPrefix(fe.Error()[:len(mr)+1+strings.Index(fe.Error()[len(mr)+1:], ": ")+len(fe.Key)+2], mr+":"))
				if fe.Source.Name != mr || fe.Source.Line == 0 || fe.Key == "" {
					t.Errorf("degraded %v does not name file, line and key", fe)
				}
			}
			for i := range degraded {
				degraded[i] = strings.Replace(degraded[i], " [lmnt_marketplace_plugin] ", " ", 1)
			}
			if !slices.Equal(degraded, tc.degraded) {
				t.Errorf("degraded %q, want %q", degraded, tc.degraded)
			}
		})
	}
}

// A moonraker.conf lmntd cannot read at all (a syntax error, no
// permission) costs the import, never the start.
func TestUnreadableMoonrakerConfDegrades(t *testing.T) {
	dir := t.TempDir()
	mr := testutil.WriteFile(t, dir, "moonraker.conf", "[lmnt_marketplace_plugin]\ncheck_interval: 30\nthis is not an option\n")
	cfg := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, dir, "lmntd.toml", hermetic(dir)), Environ: env()})
	d := cfg.Degraded()
	if len(d) != 1 || !errors.Is(d[0], ErrSyntax) || d[0].Source.Line != 3 ||
		d[0].Error() != mr+`:3: moonraker.conf syntax error (nothing imported): not an option line (want "key: value"): "this is not an option" (allowed: fix the file, or migration.import_moonraker = false)` {
		t.Fatalf("degraded %v", d)
	}
	if len(cfg.Imports()) != 0 || cfg.Marketplace.CheckInterval != time.Minute {
		t.Errorf("imported from a broken file: %v", cfg.Imports())
	}
	if os.Geteuid() != 0 { // root reads anything
		if err := os.Chmod(mr, 0o000); err != nil {
			t.Fatal(err)
		}
		cfg = mustLoad(t, Options{ConfigFile: filepath.Join(dir, "lmntd.toml"), Environ: env()})
		if d := cfg.Degraded(); len(d) != 1 || !errors.Is(d[0], ErrUnreadableFile) || d[0].Key != "migration.moonraker_conf" {
			t.Fatalf("degraded %v", d)
		}
	}
}

// api_profile "auto" decides from a known host or from the imports; a
// setting the user made explicitly is never second-guessed.
func TestAPIProfileAuto(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ toml, want string }{
		{"", ProfileCurrent},
		{"[marketplace]\nurl = \"https://api.lmnt.market\"\n", ProfileLegacy},
		{"[marketplace]\nurl = \"https://printers.lmnt.co\"\n", ProfileCurrent},
		{"[marketplace]\nurl = \"https://marketplace.example\"\n", ""},
		{"[marketplace]\nurl = \"https://marketplace.example\"\ncheck_interval = \"0s\"\n", ""}, // set here, not imported: no era evidence
		{"api_profile = \"legacy\"\n[marketplace]\nurl = \"https://api.lmnt.co\"\n", ProfileLegacy},
		{"api_profile = \"current\"\n[marketplace]\nurl = \"https://marketplace.example\"\n", ProfileCurrent},
	} {
		cfg := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, dir, "lmntd.toml", tc.toml+hermetic(dir)), Environ: env()})
		if got := cfg.Profile(); got.Profile != tc.want || got.Reason == "" {
			t.Errorf("%q: %+v, want %q", tc.toml, got, tc.want)
		}
	}
	if cfg := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, dir, "lmntd.toml", "api_profile = \"legacy\"\n"+hermetic(dir)), Environ: env()}); cfg.Marketplace.URL != DefaultLegacyURL {
		t.Errorf("legacy default URL: %s", cfg.Marketplace.URL)
	}
}

// check_interval 0 is push only with a safety poll of at most one request
// per 5 minutes, whatever the jitter draws.
func TestPushOnlySafetyPoll(t *testing.T) {
	dir := t.TempDir()
	cfg := mustLoad(t, Options{ConfigFile: testutil.WriteFile(t, dir, "lmntd.toml", "[marketplace]\ncheck_interval = \"0s\"\n"+hermetic(dir)), Environ: env()})
	every, jitter := cfg.PollSchedule()
	if !cfg.PushOnly() || float64(every)*(1-jitter) < float64(5*time.Minute) || every > 6*time.Minute || jitter <= 0 {
		t.Fatalf("push only %v: every %v ± %v", cfg.PushOnly(), every, jitter)
	}
}

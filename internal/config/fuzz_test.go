package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary lmntd.toml text to Load: it never panics; a
// refusal names the file and wraps one of the error classes; an accepted
// file yields a configuration that passes validation again (no loopback in
// api.trusted_clients, paths absolute). Seeds: the shipped example with
// every setting uncommented, and testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	shipped, err := os.ReadFile("../../packaging/lmntd.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(shipped))
	f.Add(regexp.MustCompile(`(?m)^# ([a-z_]+ = )`).ReplaceAllString(string(shipped), "$1"))
	f.Add("[api]\ntrusted_clients = [\"192.168.1.0/24\", \"127.0.0.1\"]\nallowed_hosts = [\"printer.lan\"]\n")
	f.Add("[limits]\nmax_download_size = 99999999999999999999\n")
	classes := []error{ErrSyntax, ErrUnknownKey, ErrWrongType, ErrOutOfRange, ErrInvalidValue, ErrInsecureURL, ErrUnreadableFile, ErrSecretInConfig}
	f.Fuzz(func(t *testing.T, text string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "lmntd.toml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// Keep the moonraker.conf import inside the test directory.
		cfg, err := Load(Options{ConfigFile: path, Environ: func() []string {
			return []string{"LMNTD_MIGRATION_MOONRAKER_CONF=" + filepath.Join(dir, "moonraker.conf")}
		}})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the refusal does not name the file: %v", err)
			}
			for _, c := range classes {
				if errors.Is(err, c) {
					return
				}
			}
			t.Fatalf("the refusal has no error class: %v", err)
		}
		if errs := cfg.validate(); len(errs) > 0 {
			t.Fatalf("accepted, yet invalid: %v", errors.Join(errs...))
		}
		for _, p := range cfg.API.TrustedClients {
			if coversLoopback(p) {
				t.Fatalf("accepted loopback in trusted_clients: %s", p)
			}
		}
		_ = cfg.Settings()
	})
}

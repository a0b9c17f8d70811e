package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sunPathMax is the longest unix socket path Linux accepts (sun_path minus NUL).
const sunPathMax = 107

var (
	userNameRE     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	firebaseIDRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$`)
	filamentTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+_. -]{0,31}$`)
)

// validate checks values and relations after the layers are merged; each
// problem names the layer that supplied the offending value.
func (c *Config) validate() []error {
	var errs []error
	fail := func(key string, class error, problem, allowed string) {
		errs = append(errs, &FieldError{Source: c.Origin(key), Key: key, Class: class, Problem: problem, Allowed: allowed})
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		fail(key, ErrInvalidValue, fmt.Sprintf("%q is not a valid choice", v), strings.Join(allowed, ", "))
	}
	between := func(key string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			fail(key, ErrOutOfRange, fmt.Sprintf("%s is out of range", d), fmt.Sprintf("%s to %s", lo, hi))
		}
	}
	absPath := func(key, p string, optional bool) bool {
		if p == "" {
			if !optional {
				fail(key, ErrInvalidValue, "must not be empty", "an absolute path")
			}
			return false
		}
		if !filepath.IsAbs(p) {
			fail(key, ErrInvalidValue, fmt.Sprintf("%q is not an absolute path", p), "an absolute path")
			return false
		}
		return true
	}
	socketPath := func(key, p string) {
		if absPath(key, p, false) && len(p) > sunPathMax {
			fail(key, ErrInvalidValue, fmt.Sprintf("socket path is %d bytes long", len(p)), fmt.Sprintf("at most %d bytes (the unix socket limit)", sunPathMax))
		}
	}
	checkURL := func(key, raw string, optional bool) {
		if raw == "" && optional {
			return
		}
		if problem, class, allowed := c.urlProblem(raw); problem != "" {
			fail(key, class, problem, allowed)
		}
	}

	oneOf("api_profile", c.APIProfile, ProfileCurrent, ProfileLegacy)
	checkURL("marketplace.url", c.Marketplace.URL, false)
	checkURL("marketplace.cws_url", c.Marketplace.CWSURL, false)
	between("marketplace.check_interval", c.Marketplace.CheckInterval, 5*time.Second, time.Hour)
	if absPath("marketplace.tls_ca_file", c.Marketplace.TLSCAFile, true) {
		if problem := checkCAFile(c.Marketplace.TLSCAFile); problem != "" {
			fail("marketplace.tls_ca_file", ErrUnreadableFile, problem, "a readable PEM file with at least one CA certificate")
		}
	}

	if !firebaseIDRE.MatchString(c.Push.FirebaseProjectID) {
		fail("push.firebase_project_id", ErrInvalidValue, fmt.Sprintf("%q is not a Firebase project id", c.Push.FirebaseProjectID),
			"lower-case letters, digits and dashes, e.g. lmnt-prod or lmnt-dev")
	}
	checkURL("push.base_url", c.Push.BaseURL, true)

	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")

	absPath("paths.state_directory", c.Paths.StateDirectory, false)
	absPath("paths.runtime_directory", c.Paths.RuntimeDirectory, false)

	oneOf("seal.backend", c.Seal.Backend, "auto", "tpm", "software")
	absPath("seal.tpm_device", c.Seal.TPMDevice, false)
	seen := map[int]bool{}
	for _, pcr := range c.Seal.TPMPCRs {
		switch {
		case pcr < 0 || pcr > 23:
			fail("seal.tpm_pcrs", ErrOutOfRange, fmt.Sprintf("PCR %d does not exist", pcr), "PCR numbers 0 to 23")
		case seen[pcr]:
			fail("seal.tpm_pcrs", ErrInvalidValue, fmt.Sprintf("PCR %d is listed twice", pcr), "each PCR once")
		}
		seen[pcr] = true
	}

	if !userNameRE.MatchString(c.Klipper.User) {
		fail("klipper.user", ErrInvalidValue, fmt.Sprintf("%q is not a user name", c.Klipper.User), "a Linux user name such as pi")
	}
	absPath("klipper.config_file", c.Klipper.ConfigFile, false)
	socketPath("klipper.bridge_socket", c.Klipper.BridgeSocket)
	between("klipper.status_interval", c.Klipper.StatusInterval, time.Second, time.Minute)

	socketPath("api.socket", c.API.Socket)
	if c.API.Listen != "" {
		if problem := listenProblem(c.API.Listen); problem != "" {
			fail("api.listen", ErrInvalidValue, problem, `host:port such as "0.0.0.0:7130" or "[::]:7130", or empty for off`)
		}
	}
	if absPath("api.api_key_file", c.API.APIKeyFile, true) {
		if problem := checkKeyFile(c.API.APIKeyFile); problem != "" {
			fail("api.api_key_file", ErrUnreadableFile, problem, "a readable, non-empty file not readable by others (mode 0600 or 0640)")
		}
	}

	if c.Jobs.FilamentType != "" && !filamentTypeRE.MatchString(c.Jobs.FilamentType) {
		fail("jobs.filament_type", ErrInvalidValue, fmt.Sprintf("%q is not a filament type", c.Jobs.FilamentType),
			"up to 32 letters, digits, '+', '_', '.', '-' or spaces, e.g. PLA, PETG, ABS+; empty: not checked")
	}

	if s := c.Limits.MaxDownloadSize; s < MiB || s > 16*GiB {
		fail("limits.max_download_size", ErrOutOfRange, fmt.Sprintf("%s is out of range", s), "1MiB to 16GiB")
	}
	if n := c.Limits.MaxLocalJobs; n < 1 || n > 64 {
		fail("limits.max_local_jobs", ErrOutOfRange, fmt.Sprintf("%d is out of range", n), "1 to 64")
	}
	if s := c.Limits.MaxLocalQueueSize; s < MiB || s > 16*GiB {
		fail("limits.max_local_queue_size", ErrOutOfRange, fmt.Sprintf("%s is out of range", s), "1MiB to 16GiB")
	}
	between("limits.download_timeout", c.Limits.DownloadTimeout, 10*time.Second, 24*time.Hour)
	between("limits.download_idle_timeout", c.Limits.DownloadIdleTimeout, 5*time.Second, 10*time.Minute)
	if c.Limits.DownloadIdleTimeout > c.Limits.DownloadTimeout {
		fail("limits.download_idle_timeout", ErrOutOfRange,
			fmt.Sprintf("%s is longer than limits.download_timeout (%s)", c.Limits.DownloadIdleTimeout, c.Limits.DownloadTimeout),
			"at most limits.download_timeout")
	}
	between("limits.request_timeout", c.Limits.RequestTimeout, time.Second, 10*time.Minute)

	absPath("migration.moonraker_conf", c.Migration.MoonrakerConf, true)
	return errs
}

// urlProblem checks a marketplace-side URL: https, or http only toward
// loopback or with development_mode; no credentials, query or fragment.
func (c *Config) urlProblem(raw string) (problem string, class error, allowed string) {
	const allowedURL = "an https:// URL (http:// only for loopback hosts or with development_mode = true), without user, query or fragment"
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Sprintf("%q is not an absolute URL", redactURL(raw)), ErrInvalidValue, allowedURL
	}
	if u.User != nil {
		return "credentials in URLs are not allowed (they would end up in logs)", ErrSecretInConfig, secretHint
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Sprintf("%q has a query or fragment", redactURL(raw)), ErrInvalidValue, allowedURL
	}
	switch u.Scheme {
	case "https":
		return "", nil, ""
	case "http":
		if isLoopbackHost(u.Hostname()) || c.DevelopmentMode {
			return "", nil, ""
		}
		return fmt.Sprintf("plain http to %s is not allowed outside loopback", u.Host), ErrInsecureURL, allowedURL
	}
	return fmt.Sprintf("scheme %q is not supported", u.Scheme), ErrInvalidValue, allowedURL
}

// redactURL drops user info and query from a URL before it goes into a message.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func listenProblem(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", addr)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return fmt.Sprintf("host %q is not an IP address", host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q is not 1 to 65535", port)
	}
	return ""
}

func checkCAFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "cannot read: " + unwrapPathErr(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return "contains no PEM certificate"
	}
	return ""
}

func checkKeyFile(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "cannot read: " + unwrapPathErr(err)
	}
	if !st.Mode().IsRegular() {
		return "is not a regular file"
	}
	if st.Mode().Perm()&0o007 != 0 {
		return fmt.Sprintf("mode %04o lets every user read the API key", st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "cannot read: " + unwrapPathErr(err)
	}
	if strings.TrimSpace(string(data)) == "" {
		return "is empty"
	}
	return ""
}

func unwrapPathErr(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

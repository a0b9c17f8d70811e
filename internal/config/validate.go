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

	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// sunPathMax is the longest unix socket path Linux accepts (sun_path minus NUL).
const sunPathMax = 107

// The range of a polling check_interval (0 is push only).
const (
	MinCheckInterval = 5 * time.Second
	MaxCheckInterval = time.Hour
)

// tokenHostProblem checks one marketplace.token_hosts entry: a bare host or
// host:port, never a storage host (the printer token must not go there).
func tokenHostProblem(h string) string {
	if h == "" || strings.ContainsAny(h, "/?#@ ") {
		return fmt.Sprintf("%q is not a host or host:port", h)
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("%q has no valid port", h)
		}
		host = hh
	}
	host = strings.ToLower(host)
	for _, storage := range []string{"storage.googleapis.com", "firebasestorage.googleapis.com"} {
		if host == storage || strings.HasSuffix(host, "."+storage) {
			return fmt.Sprintf("%q is a storage host: the printer token never goes there", h)
		}
	}
	return ""
}

var (
	userNameRE     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	firebaseIDRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$`)
	filamentTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+_. -]{0,31}$`)
	hostNameRE     = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)
	// instanceRE: a systemd instance name that needs no escaping, as
	// KIAUH and MainsailOS name their instances (printer_1, voron-2).
	instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)
)

// loopbackNets are the addresses any local process can connect from.
var loopbackNets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:127.0.0.0/104"),
}

// dropLoopbackTrust removes api.trusted_clients entries that admit loopback
// and reports each as a config error that does not stop lmntd: every local
// user can connect from loopback, so trusting it would hand them the API. The
// entry is never honoured; refusing to start instead would take a printer
// offline after an unattended upgrade over a line an older example suggested.
func (c *Config) dropLoopbackTrust() []*FieldError {
	var dropped []*FieldError
	kept := c.API.TrustedClients[:0:0]
	for _, pfx := range c.API.TrustedClients {
		if !coversLoopback(pfx) {
			kept = append(kept, pfx)
			continue
		}
		dropped = append(dropped, &FieldError{Source: c.Origin("api.trusted_clients"), Key: "api.trusted_clients", Class: ErrInvalidValue,
			Problem: fmt.Sprintf("%s includes loopback addresses: every local user can connect from loopback, so it would admit them all; lmntd ignores it", pfx),
			Allowed: "LAN networks only, e.g. [\"192.168.1.0/24\"]; for nginx on this machine use api.proxy_socket (lmntd-proxy.socket) and the shipped snippet, which pass the browser's own address"})
	}
	c.API.TrustedClients = kept
	return dropped
}

// coversLoopback says whether pfx admits a loopback address.
func coversLoopback(pfx netip.Prefix) bool {
	for _, lo := range loopbackNets {
		if pfx.Overlaps(lo) {
			return true
		}
	}
	return false
}

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

	oneOf("api_profile", c.APIProfile, ProfileAuto, ProfileCurrent, ProfileLegacy)
	checkURL("marketplace.url", c.Marketplace.URL, false)
	checkURL("marketplace.cws_url", c.Marketplace.CWSURL, false)
	if d := c.Marketplace.CheckInterval; d != 0 && (d < MinCheckInterval || d > MaxCheckInterval) {
		fail("marketplace.check_interval", ErrOutOfRange, fmt.Sprintf("%s is out of range", d),
			fmt.Sprintf("%s to %s, or 0s for push only", MinCheckInterval, MaxCheckInterval))
	}
	for _, h := range c.Marketplace.TokenHosts {
		if problem := tokenHostProblem(h); problem != "" {
			fail("marketplace.token_hosts", ErrInvalidValue, problem, `host names or host:port such as "printers.lmnt.co" (https only; no scheme, path or storage host)`)
		}
	}
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
	absPath("klipper.gcodes_dir", c.Klipper.GcodesDir, false)

	socketPath("api.socket", c.API.Socket)
	if c.API.Listen != "" {
		if problem := listenProblem(c.API.Listen); problem != "" {
			fail("api.listen", ErrInvalidValue, problem, `host:port such as "0.0.0.0:7130" or "[::]:7130", or empty for off`)
		}
	}
	if c.API.ProxySocket != "" {
		socketPath("api.proxy_socket", c.API.ProxySocket)
	}
	if !userNameRE.MatchString(c.API.ProxyGroup) {
		fail("api.proxy_group", ErrInvalidValue, fmt.Sprintf("%q is not a group name", c.API.ProxyGroup), "the web server's group, e.g. www-data")
	}
	for _, h := range c.API.AllowedHosts {
		if !hostNameRE.MatchString(h) {
			if _, err := netip.ParseAddr(h); err != nil {
				fail("api.allowed_hosts", ErrInvalidValue, fmt.Sprintf("%q is not a host name or IP address", h),
					"host names such as printer.example.com or IP addresses, without scheme or port")
			}
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
	if r := c.Limits.DownloadMinRate; r < 256 || r > 64*MiB {
		fail("limits.download_min_rate", ErrOutOfRange, fmt.Sprintf("%s is out of range", r), "256 to 64MiB (bytes per second)")
	}
	between("limits.request_timeout", c.Limits.RequestTimeout, time.Second, 10*time.Minute)

	if c.Instance != "" && !instanceRE.MatchString(c.Instance) {
		fail("instance", ErrInvalidValue, fmt.Sprintf("%q is not an instance name", c.Instance),
			"up to 32 letters, digits, '_' or '-', starting with a letter or digit, e.g. printer_1")
	}
	if absPath("metrics.textfile", c.Metrics.Textfile, true) && !strings.HasSuffix(c.Metrics.Textfile, ".prom") {
		fail("metrics.textfile", ErrInvalidValue, fmt.Sprintf("%q does not end in .prom", c.Metrics.Textfile),
			"a file ending in .prom in node_exporter's textfile directory (it reads no other)")
	}
	between("metrics.textfile_interval", c.Metrics.TextfileInterval, 5*time.Second, 10*time.Minute)

	absPath("migration.moonraker_conf", c.Migration.MoonrakerConf, true)
	return errs
}

// urlProblem checks a marketplace-side URL: https, or http only toward
// loopback or with development_mode; no credentials, query or fragment.
func (c *Config) urlProblem(raw string) (problem string, class error, allowed string) {
	const allowedURL = "an https:// URL (http:// only for loopback hosts or with development_mode = true), without user, query or fragment"
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Sprintf("%q is not an absolute URL", redact.URLString(raw)), ErrInvalidValue, allowedURL
	}
	if u.User != nil {
		return "credentials in URLs are not allowed (they would end up in logs)", ErrSecretInConfig, secretHint
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Sprintf("%q has a query or fragment", redact.URLString(raw)), ErrInvalidValue, allowedURL
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

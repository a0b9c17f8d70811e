// Package doctor holds the health checks that do not need the running
// daemon's state: the configuration, Klipper's printer.cfg, what each job is
// compared with, TPM access and the marketplace's reachability. lmntd's
// doctor (GET /lmnt/v1/doctor) runs them with its own checks of the key, the
// pairing and the bridge; `lmnt doctor` runs the local ones itself when the
// daemon does not answer (Local). One definition each, so the two reports
// say the same thing in the same words.
//
// The package links neither the job engine nor the daemon: the shipped lmnt
// CLI imports it.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/compat"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// Clock skew limits: past a minute the token's times and the marketplace
// disagree noticeably; past an hour TLS and token expiry break.
const (
	SkewWarn = time.Minute
	SkewFail = time.Hour
)

// Config is the configuration's checks: where it was loaded from (with the
// settings imported from moonraker.conf and the loader's notes), and the
// values lmntd could not use, so the owner learns which line to fix.
func Config(cfg *config.Config) []apitype.Check {
	file := cfg.File()
	if file == "" {
		file = "built-in defaults"
	}
	cc := apitype.Check{Name: "config", Required: true, Result: apitype.CheckOK, Detail: "loaded from " + file}
	for _, im := range cfg.Imports() {
		cc.Detail += fmt.Sprintf("; %s = %s imported from moonraker.conf (%s)", im.Key, im.Value, im.Source.String())
	}
	for _, n := range cfg.Notes() {
		cc.Detail += "; " + n
	}
	checks := []apitype.Check{cc}
	var imported, ignored []*config.FieldError
	for _, fe := range cfg.Degraded() {
		if fe.Source.Kind == config.SourceMoonraker {
			imported = append(imported, fe)
		} else {
			ignored = append(ignored, fe)
		}
	}
	if len(imported) > 0 {
		checks = append(checks, apitype.Check{Name: "moonraker.conf import", Result: apitype.CheckWarn,
			Detail: joinFieldErrors(imported, " (not imported; the built-in value is in effect)"),
			Fix:    "fix these lines of moonraker.conf, or set the keys in lmntd.toml (which wins over the import)"})
	}
	if len(ignored) > 0 {
		checks = append(checks, apitype.Check{Name: "ignored settings", Result: apitype.CheckWarn,
			Detail: joinFieldErrors(ignored, ""),
			Fix:    "remove these entries: lmntd never honours them"})
	}
	return checks
}

// joinFieldErrors is one detail line for several config problems.
func joinFieldErrors(fes []*config.FieldError, suffix string) string {
	parts := make([]string, len(fes))
	for i, fe := range fes {
		parts[i] = fe.Error() + suffix
	}
	return strings.Join(parts, "; ")
}

// KlipperConfig is the printer.cfg check: an error fails it (with the
// findings' fixes), a warning degrades it.
func KlipperConfig(r *klippercfg.Report) apitype.Check {
	c := apitype.Check{Name: "klipper config", Result: apitype.CheckOK, Detail: r.StatusLine() + " (" + r.ConfigFile + ")"}
	if !r.OK() {
		c.Result = apitype.CheckFail
		var fixes []string
		for _, f := range r.Findings {
			if f.Severity == klippercfg.SeverityError && f.Fix != "" {
				fixes = append(fixes, f.Fix)
			}
		}
		c.Fix = strings.Join(fixes, "; ")
	} else if r.Count(klippercfg.SeverityWarning) > 0 {
		c.Result = apitype.CheckWarn
	}
	return c
}

// InspectKlipperConfig reads the printer.cfg the configuration names, as
// the daemon does when its watcher has no report yet.
func InspectKlipperConfig(cfg *config.Config) *klippercfg.Report {
	return klippercfg.Inspect(cfg.Klipper.ConfigFile, klippercfg.CheckOptions{BridgeSocket: cfg.Klipper.BridgeSocket})
}

// JobCompatibility is the "job compatibility" line: what each job is
// compared with before it prints, and what cannot be. Unknowns never block
// a job, so they are listed, not warned about (a delta printer or an unset
// filament type is a normal setup).
func JobCompatibility(printer klippercfg.Printer, filamentType string) apitype.Check {
	c := apitype.Check{Name: "job compatibility", Result: apitype.CheckOK,
		Detail: "each job's nozzle, size (Z; X/Y when the file states its extents) and filament are checked against printer.cfg before it prints"}
	if gaps := compat.Coverage(printer, compat.Options{FilamentType: filamentType}); len(gaps) > 0 {
		parts := make([]string, len(gaps))
		for i, g := range gaps {
			parts[i] = g.String()
		}
		c.Detail += "; not checked: " + strings.Join(parts, "; ")
	}
	return c
}

// TPMAccess reports a TPM device lmntd cannot open: the key is then sealed
// in software although the board has a TPM, which nothing else would tell.
// Debian's tpm-udev makes the device root:tss 0660; lmntd's package adds
// lmntd to tss when the group exists (postinst, and a dpkg trigger when
// tpm-udev arrives later). ok is false when there is nothing to say (no
// device, or the software backend chosen).
func TPMAccess(backend, device string) (c apitype.Check, ok bool) {
	if backend == "software" || device == "" {
		return apitype.Check{}, false
	}
	if _, err := os.Stat(device); err != nil {
		return apitype.Check{}, false
	}
	c = apitype.Check{Name: "tpm access", Result: apitype.CheckOK, Detail: device + " opens"}
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		c.Result, c.Detail = apitype.CheckWarn, fmt.Sprintf("%s exists but lmntd cannot open it (%v): the printer key is not protected by the TPM", device, err)
		c.Fix = "sudo apt install tpm-udev && sudo usermod -a -G tss lmntd && sudo systemctl restart lmntd, then lmnt keys reseal --to tpm"
		return c, true
	}
	f.Close()
	return c, true
}

// Marketplace makes one unauthenticated request to the marketplace origin:
// any HTTP answer proves DNS, route and TLS; its Date header shows how far
// this printer's clock is off.
func Marketplace(ctx context.Context, base, caFile string) apitype.Check {
	c := apitype.Check{Name: "marketplace"}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		if pem, err := os.ReadFile(caFile); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/", nil)
	if err != nil {
		c.Result, c.Detail = apitype.CheckFail, err.Error()
		return c
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		c.Result, c.Detail, c.Fix = apitype.CheckFail, "unreachable: "+err.Error(), "check the network, DNS and marketplace.url"
		return c
	}
	resp.Body.Close()
	rtt := time.Since(start)
	c.Result, c.Detail = apitype.CheckOK, fmt.Sprintf("%s answered in %s", base, rtt.Round(time.Millisecond))
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		skew := time.Until(date) // positive: the marketplace is ahead of us
		abs := skew
		if abs < 0 {
			abs = -abs
		}
		if abs > SkewWarn+rtt {
			c.Result = apitype.CheckWarn
			if abs > SkewFail {
				c.Result, c.Required = apitype.CheckFail, true
			}
			c.Detail += fmt.Sprintf("; this printer's clock is off by %s against the marketplace", skew.Round(time.Second))
			c.Fix = "enable time synchronisation (timedatectl set-ntp true)"
		}
	}
	return c
}

// Local is `lmnt doctor` when the daemon does not answer: the checks that
// need no daemon (the configuration, printer.cfg, what jobs are compared
// with), and the daemon itself as a failed required check.
func Local(cfgFile string, daemonErr error) apitype.DoctorReport {
	var r apitype.DoctorReport
	cfg, err := config.Load(config.Options{ConfigFile: cfgFile})
	if err != nil {
		r.Checks = append(r.Checks, apitype.Check{Name: "config", Required: true, Result: apitype.CheckFail, Detail: err.Error()})
	} else {
		r.Checks = append(r.Checks, Config(cfg)...)
		kr := InspectKlipperConfig(cfg)
		r.Checks = append(r.Checks, KlipperConfig(kr), JobCompatibility(kr.Printer, cfg.Jobs.FilamentType))
	}
	r.Checks = append(r.Checks, apitype.Check{Name: "daemon", Required: true, Result: apitype.CheckFail, Detail: daemonErr.Error()})
	r.Grade()
	return r
}

package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// Clock skew limits: past a minute the token's times and the marketplace
// disagree noticeably; past an hour TLS and token expiry break.
const (
	skewWarn = time.Minute
	skewFail = time.Hour
)

// tpmAccessCheck reports a TPM device lmntd cannot open: the key is then
// sealed in software although the board has a TPM, which nothing else
// would tell. Debian's tpm-udev makes the device root:tss 0660; lmntd's
// package adds lmntd to tss when the group exists (postinst, and a dpkg
// trigger when tpm-udev arrives later). ok is false when there is nothing
// to say (no device, or the software backend chosen).
func tpmAccessCheck(backend, device string) (api.Check, bool) {
	if backend == "software" || device == "" {
		return api.Check{}, false
	}
	if _, err := os.Stat(device); err != nil {
		return api.Check{}, false
	}
	c := api.Check{Name: "tpm access", Result: api.CheckOK, Detail: device + " opens"}
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		c.Result, c.Detail = api.CheckWarn, fmt.Sprintf("%s exists but lmntd cannot open it (%v): the printer key is not protected by the TPM", device, err)
		c.Fix = "sudo apt install tpm-udev && sudo usermod -a -G tss lmntd && sudo systemctl restart lmntd, then lmnt keys reseal --to tpm"
		return c, true
	}
	f.Close()
	return c, true
}

// doctor runs the health checks. Required checks failing ⇒ broken; wanted
// ones ⇒ degraded (greenboot's required/wanted split).
func (d *daemon) doctor(ctx context.Context, offline bool) api.DoctorReport {
	cfg := d.cfg.Load()
	var r api.DoctorReport
	add := func(c api.Check) { r.Checks = append(r.Checks, c) }

	// Configuration (it loaded, or the daemon would not run).
	cc := api.Check{Name: "config", Required: true, Result: api.CheckOK, Detail: "loaded from " + orDefault(cfg.File(), "built-in defaults")}
	for _, im := range cfg.Imports() {
		cc.Detail += fmt.Sprintf("; %s = %s imported from moonraker.conf (%s)", im.Key, im.Value, im.Source.String())
	}
	for _, n := range cfg.Notes() {
		cc.Detail += "; " + n
	}
	add(cc)
	// Values lmntd could not use: the daemon runs without them, and the
	// owner learns which line to fix.
	var imported, ignored []*config.FieldError
	for _, fe := range cfg.Degraded() {
		if fe.Source.Kind == config.SourceMoonraker {
			imported = append(imported, fe)
		} else {
			ignored = append(ignored, fe)
		}
	}
	if len(imported) > 0 {
		add(api.Check{Name: "moonraker.conf import", Result: api.CheckWarn,
			Detail: joinFieldErrors(imported, " (not imported; the built-in value is in effect)"),
			Fix:    "fix these lines of moonraker.conf, or set the keys in lmntd.toml (which wins over the import)"})
	}
	if len(ignored) > 0 {
		add(api.Check{Name: "ignored settings", Result: api.CheckWarn,
			Detail: joinFieldErrors(ignored, ""),
			Fix:    "remove these entries: lmntd never honours them"})
	}

	// API profile and how the queue is watched.
	prof := d.apiProfile()
	pr := api.Check{Name: "api profile", Result: api.CheckOK, Detail: prof.Profile + " (" + prof.Reason + ")"}
	if !d.profileSettled() {
		pr.Result, pr.Fix = api.CheckWarn, "check the network (the marketplace must answer once), or set api_profile in lmntd.toml"
	}
	add(pr)
	qc := api.Check{Name: "job queue", Result: api.CheckOK}
	every, _ := cfg.PollSchedule()
	switch {
	case cfg.PushOnly() && cfg.Push.Enabled:
		qc.Detail = fmt.Sprintf("push only (check_interval 0): jobs arrive by the push stream; a safety poll runs every %s or more", every.Round(time.Second))
	case cfg.PushOnly():
		qc.Result = api.CheckWarn
		qc.Detail = fmt.Sprintf("check_interval 0 with push disabled: only the safety poll (every %s or more) finds jobs", every.Round(time.Second))
		qc.Fix = "enable push (push.enabled = true) or set marketplace.check_interval"
	default:
		qc.Detail = fmt.Sprintf("polled every %s", every)
		if cfg.Push.Enabled {
			qc.Detail += ", and at once on a push"
		}
	}
	add(qc)

	// State directory.
	sc := api.Check{Name: "state directory", Required: true, Result: api.CheckOK, Detail: cfg.Paths.StateDirectory}
	if f, err := os.CreateTemp(cfg.Paths.StateDirectory, ".doctor-*"); err != nil {
		sc.Result, sc.Detail, sc.Fix = api.CheckFail, err.Error(), "the state directory must be writable by lmntd (StateDirectory= in the unit)"
	} else {
		f.Close()
		os.Remove(f.Name())
	}
	add(sc)
	add(d.journalCheck())
	add(d.memoryCheck())

	// Sealing.
	state, keyID, backendName, problem, advice, _, _ := d.keys.state()
	kc := api.Check{Name: "printer key", Required: true}
	switch state {
	case keyOK:
		kc.Result, kc.Detail = api.CheckOK, fmt.Sprintf("key %s sealed with %s", shortID(keyID), backendName)
	default:
		kc.Result, kc.Detail, kc.Fix = api.CheckFail, problem, advice
	}
	add(kc)
	if state == keyOK && backendName != d.keys.configuredBackend() {
		add(api.Check{Name: "sealing backend", Result: api.CheckWarn,
			Detail: fmt.Sprintf("sealed with %s, configured %s", backendName, d.keys.configuredBackend()),
			Fix:    "lmnt keys reseal --to " + d.keys.configuredBackend()})
	}

	if tc, ok := tpmAccessCheck(cfg.Seal.Backend, cfg.Seal.TPMDevice); ok {
		add(tc)
	}

	// Pairing and token.
	client := d.mkt.Load()
	tok, paired := client.Token()
	pc := api.Check{Name: "pairing"}
	switch {
	case client.PairingLost():
		pc.Result, pc.Detail, pc.Fix = api.CheckFail, "the marketplace revoked the printer token or kept refusing its refresh", "lmnt pair"
	case !paired:
		pc.Result, pc.Detail, pc.Fix = api.CheckWarn, "not paired", "lmnt pair"
	case !client.AuthHealth().OK:
		pc.Result, pc.Detail = api.CheckWarn, "paired as printer "+tok.PrinterID+"; "+client.AuthHealth().Problem
		pc.Fix = "lmntd keeps retrying; if the marketplace keeps refusing, pair again (lmnt pair)"
	default:
		pc.Result, pc.Detail = api.CheckOK, "paired as printer "+tok.PrinterID
	}
	add(pc)
	now := time.Now()
	if paired {
		tc := api.Check{Name: "clock vs token", Result: api.CheckOK}
		switch {
		case !tok.ObtainedAt.IsZero() && tok.ObtainedAt.Sub(now) > skewWarn:
			skew := tok.ObtainedAt.Sub(now).Round(time.Second)
			tc.Result = api.CheckWarn
			if skew > skewFail {
				tc.Result, tc.Required = api.CheckFail, true
			}
			tc.Detail = fmt.Sprintf("the token was issued %s in this printer's future: the clock is behind", skew)
			tc.Fix = "enable time synchronisation (timedatectl set-ntp true)"
		case !tok.Expiry.IsZero() && now.After(tok.Expiry):
			tc.Result, tc.Detail, tc.Fix = api.CheckFail, "the printer token expired at "+tok.Expiry.UTC().Format(time.RFC3339)+" (or the clock is ahead)",
				"check the clock; lmntd keeps retrying the refresh"
		default:
			tc.Detail = "token valid until " + tok.Expiry.UTC().Format(time.RFC3339)
		}
		add(tc)
	}

	// Klipper config.
	kr := d.configReport()
	kcfg := api.Check{Name: "klipper config", Result: api.CheckOK, Detail: kr.StatusLine() + " (" + kr.ConfigFile + ")"}
	if !kr.OK() {
		kcfg.Result = api.CheckFail
		var fixes []string
		for _, f := range kr.Findings {
			if f.Severity == klippercfg.SeverityError && f.Fix != "" {
				fixes = append(fixes, f.Fix)
			}
		}
		kcfg.Fix = strings.Join(fixes, "; ")
	} else if kr.Count(klippercfg.SeverityWarning) > 0 {
		kcfg.Result = api.CheckWarn
	}
	add(kcfg)

	add(api.CompatibilityCheck(kr.Printer, cfg.Jobs.FilamentType))

	// Bridge.
	kl := d.bridge.State()
	bc := api.Check{Name: "klipper bridge"}
	if problem, next := klipperProblem(kl); kl.Connected && problem != "" {
		bc.Result, bc.Detail, bc.Fix = api.CheckWarn, problem, next
	} else if kl.Connected {
		bc.Result, bc.Detail = api.CheckOK, fmt.Sprintf("connected (Klipper %s, extra %s)", kl.Hello.Klipper.Version, kl.Hello.ExtraVersion)
	} else {
		bc.Result, bc.Detail = api.CheckFail, "Klipper's extra is not connected to "+cfg.Klipper.BridgeSocket
		bc.Fix = "add [encrypted_file_bridge] to printer.cfg (lmnt setup), make Klipper's user a member of group lmnt, restart Klipper"
	}
	add(bc)
	if c, ok := d.textfileCheck(); ok {
		add(c)
	}

	// Marketplace reachability and clock against its Date header.
	mc := api.Check{Name: "marketplace"}
	if offline {
		mc.Result, mc.Detail = api.CheckSkip, "offline"
		add(mc)
	} else {
		add(d.checkMarketplace(ctx, client.BaseURL(), cfg.Marketplace.TLSCAFile))
	}
	r.Grade()
	return r
}

func (d *daemon) configReport() *klippercfg.Report {
	if d.kcfg != nil {
		if r := d.kcfg.Latest(); r != nil {
			return r
		}
	}
	c := d.cfg.Load()
	return klippercfg.Inspect(c.Klipper.ConfigFile, klippercfg.CheckOptions{BridgeSocket: c.Klipper.BridgeSocket})
}

// checkMarketplace makes one unauthenticated request to the marketplace
// origin: any HTTP answer proves DNS, route and TLS; its Date header shows
// how far this printer's clock is off.
func (d *daemon) checkMarketplace(ctx context.Context, base, caFile string) api.Check {
	c := api.Check{Name: "marketplace"}
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
		c.Result, c.Detail = api.CheckFail, err.Error()
		return c
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		c.Result, c.Detail, c.Fix = api.CheckFail, "unreachable: "+err.Error(), "check the network, DNS and marketplace.url"
		return c
	}
	resp.Body.Close()
	rtt := time.Since(start)
	c.Result, c.Detail = api.CheckOK, fmt.Sprintf("%s answered in %s", base, rtt.Round(time.Millisecond))
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		skew := time.Until(date) // positive: the marketplace is ahead of us
		abs := skew
		if abs < 0 {
			abs = -abs
		}
		if abs > skewWarn+rtt {
			c.Result = api.CheckWarn
			if abs > skewFail {
				c.Result, c.Required = api.CheckFail, true
			}
			c.Detail += fmt.Sprintf("; this printer's clock is off by %s against the marketplace", skew.Round(time.Second))
			c.Fix = "enable time synchronisation (timedatectl set-ntp true)"
		}
	}
	return c
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// joinFieldErrors is one doctor detail line for several config problems.
func joinFieldErrors(fes []*config.FieldError, suffix string) string {
	parts := make([]string, len(fes))
	for i, fe := range fes {
		parts[i] = fe.Error() + suffix
	}
	return strings.Join(parts, "; ")
}

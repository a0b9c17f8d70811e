package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/doctor"
	"github.com/lmnt-marketplace/lmntd/internal/klippercfg"
)

// doctor runs the health checks. Required checks failing ⇒ broken; wanted
// ones ⇒ degraded (greenboot's required/wanted split).
func (d *daemon) doctor(ctx context.Context, offline bool) apitype.DoctorReport {
	cfg := d.cfg.Load()
	var r apitype.DoctorReport
	add := func(c apitype.Check) { r.Checks = append(r.Checks, c) }

	// Configuration (it loaded, or the daemon would not run), and the
	// values lmntd could not use.
	r.Checks = append(r.Checks, doctor.Config(cfg)...)

	// API profile and how the queue is watched.
	prof := d.apiProfile()
	pr := apitype.Check{Name: "api profile", Result: apitype.CheckOK, Detail: prof.Profile + " (" + prof.Reason + ")"}
	if !d.profileSettled() {
		pr.Result, pr.Fix = apitype.CheckWarn, "check the network (the marketplace must answer once), or set api_profile in lmntd.toml"
	}
	add(pr)
	qc := apitype.Check{Name: "job queue", Result: apitype.CheckOK}
	every, _ := cfg.PollSchedule()
	switch {
	case cfg.PushOnly() && cfg.Push.Enabled:
		qc.Detail = fmt.Sprintf("push only (check_interval 0): jobs arrive by the push stream; a safety poll runs every %s or more", every.Round(time.Second))
	case cfg.PushOnly():
		qc.Result = apitype.CheckWarn
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
	sc := apitype.Check{Name: "state directory", Required: true, Result: apitype.CheckOK, Detail: cfg.Paths.StateDirectory}
	if f, err := os.CreateTemp(cfg.Paths.StateDirectory, ".doctor-*"); err != nil {
		sc.Result, sc.Detail, sc.Fix = apitype.CheckFail, err.Error(), "the state directory must be writable by lmntd (StateDirectory= in the unit)"
	} else {
		f.Close()
		os.Remove(f.Name())
	}
	add(sc)
	add(d.journalCheck())
	add(d.memoryCheck())

	// Sealing.
	state, keyID, backendName, problem, advice, _, _ := d.keys.state()
	kc := apitype.Check{Name: "printer key", Required: true}
	switch state {
	case keyOK:
		kc.Result, kc.Detail = apitype.CheckOK, fmt.Sprintf("key %s sealed with %s", shortID(keyID), backendName)
	default:
		kc.Result, kc.Detail, kc.Fix = apitype.CheckFail, problem, advice
	}
	add(kc)
	if state == keyOK && backendName != d.keys.configuredBackend() {
		add(apitype.Check{Name: "sealing backend", Result: apitype.CheckWarn,
			Detail: fmt.Sprintf("sealed with %s, configured %s", backendName, d.keys.configuredBackend()),
			Fix:    "lmnt keys reseal --to " + d.keys.configuredBackend()})
	}

	if tc, ok := doctor.TPMAccess(cfg.Seal.Backend, cfg.Seal.TPMDevice); ok {
		add(tc)
	}

	// Pairing and token.
	client := d.mkt.Load()
	tok, paired := client.Token()
	pc := apitype.Check{Name: "pairing"}
	switch {
	case client.PairingLost():
		pc.Result, pc.Detail, pc.Fix = apitype.CheckFail, "the marketplace revoked the printer token or kept refusing its refresh", "lmnt pair"
	case !paired:
		pc.Result, pc.Detail, pc.Fix = apitype.CheckWarn, "not paired", "lmnt pair"
	case !client.AuthHealth().OK:
		pc.Result, pc.Detail = apitype.CheckWarn, "paired as printer "+tok.PrinterID+"; "+client.AuthHealth().Problem
		pc.Fix = "lmntd keeps retrying; if the marketplace keeps refusing, pair again (lmnt pair)"
	default:
		pc.Result, pc.Detail = apitype.CheckOK, "paired as printer "+tok.PrinterID
	}
	add(pc)
	now := time.Now()
	if paired {
		tc := apitype.Check{Name: "clock vs token", Result: apitype.CheckOK}
		switch {
		case !tok.ObtainedAt.IsZero() && tok.ObtainedAt.Sub(now) > doctor.SkewWarn:
			skew := tok.ObtainedAt.Sub(now).Round(time.Second)
			tc.Result = apitype.CheckWarn
			if skew > doctor.SkewFail {
				tc.Result, tc.Required = apitype.CheckFail, true
			}
			tc.Detail = fmt.Sprintf("the token was issued %s in this printer's future: the clock is behind", skew)
			tc.Fix = "enable time synchronisation (timedatectl set-ntp true)"
		case !tok.Expiry.IsZero() && now.After(tok.Expiry):
			tc.Result, tc.Detail, tc.Fix = apitype.CheckFail, "the printer token expired at "+tok.Expiry.UTC().Format(time.RFC3339)+" (or the clock is ahead)",
				"check the clock; lmntd keeps retrying the refresh"
		default:
			tc.Detail = "token valid until " + tok.Expiry.UTC().Format(time.RFC3339)
		}
		add(tc)
	}

	// Klipper config.
	kr := d.configReport()
	add(doctor.KlipperConfig(kr))
	add(doctor.JobCompatibility(kr.Printer, cfg.Jobs.FilamentType))

	// Bridge.
	kl := d.bridge.State()
	bc := apitype.Check{Name: "klipper bridge"}
	if problem, next := klipperProblem(kl); kl.Connected && problem != "" {
		bc.Result, bc.Detail, bc.Fix = apitype.CheckWarn, problem, next
	} else if kl.Connected {
		bc.Result, bc.Detail = apitype.CheckOK, fmt.Sprintf("connected (Klipper %s, extra %s)", kl.Hello.Klipper.Version, kl.Hello.ExtraVersion)
	} else {
		bc.Result, bc.Detail = apitype.CheckFail, "Klipper's extra is not connected to "+cfg.Klipper.BridgeSocket
		bc.Fix = "add [encrypted_file_bridge] to printer.cfg (lmnt setup), make Klipper's user a member of group lmnt, restart Klipper"
	}
	add(bc)
	if c, ok := d.textfileCheck(); ok {
		add(c)
	}

	// Marketplace reachability and clock against its Date header.
	mc := apitype.Check{Name: "marketplace"}
	if offline {
		mc.Result, mc.Detail = apitype.CheckSkip, "offline"
		add(mc)
	} else {
		add(doctor.Marketplace(ctx, client.BaseURL(), cfg.Marketplace.TLSCAFile))
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
	return doctor.InspectKlipperConfig(d.cfg.Load())
}

package daemon

import (
	"context"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

// profileState is the API profile in effect and why.
type profileState = config.ProfileDecision

// apiProfile is the API profile in effect and why.
func (d *daemon) apiProfile() profileState { return *d.profile.Load() }

func (d *daemon) profileSettled() bool {
	select {
	case <-d.profileReady:
		return true
	default:
		return false
	}
}

// settleProfile takes the profile from the configuration when it can tell
// (an explicit api_profile, a known host, the old plugin's options).
// Otherwise the current profile stands in while probeProfile asks the
// marketplace.
func (d *daemon) settleProfile(cfg *config.Config) {
	d.profileReady = make(chan struct{})
	dec := cfg.Profile()
	if dec.Profile != "" {
		d.profile.Store(&dec)
		close(d.profileReady)
		d.log.Info("marketplace: api profile", "profile", dec.Profile, "why", dec.Reason)
		return
	}
	d.profile.Store(&profileState{Profile: config.ProfileCurrent, Reason: dec.Reason + " (probing; current until the marketplace answers)"})
}

// Probe backoff while the marketplace cannot be reached (a printer often
// starts before its network): Options.ProfileProbeRetry doubling to this.
const probeRetryMax = 5 * time.Minute

// probeProfile asks the marketplace which era it speaks (404 on the current
// poll endpoint ⇒ legacy) until it answers once, then settles the profile,
// rebuilds the client for it and lets the marketplace loops start.
func (d *daemon) probeProfile(ctx context.Context) {
	bo := backoff.Backoff{Min: d.o.ProfileProbeRetry, Max: probeRetryMax}
	if bo.Min <= 0 {
		bo.Min = 5 * time.Second
	}
	for {
		cfg := d.cfg.Load()
		p, why, err := d.probeOnce(ctx, cfg)
		if err == nil {
			dec := profileState{Profile: string(p), Reason: "auto: " + why}
			if c, err := d.newClientFor(cfg, string(p)); err != nil {
				d.log.Error("marketplace client", "err", err)
			} else {
				d.mkt.Store(c)
			}
			// The client is built first, so the profile's new reason
			// (status) and its settling (doctor, the marketplace loops,
			// which build clients from the stored profile) come together.
			d.profile.Store(&dec)
			close(d.profileReady)
			d.log.Info("marketplace: api profile", "profile", dec.Profile, "why", dec.Reason)
			return
		}
		wait := bo.Next()
		d.log.Warn("marketplace: api profile probe failed; retrying", "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (d *daemon) probeOnce(ctx context.Context, cfg *config.Config) (marketplace.Profile, string, error) {
	c, err := d.newClientFor(cfg, config.ProfileCurrent)
	if err != nil {
		return "", "", err
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Limits.RequestTimeout)
	defer cancel()
	return c.ProbeProfile(pctx)
}

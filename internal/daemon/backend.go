package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/jobs/adapters"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
	"github.com/lmnt-marketplace/lmntd/internal/seal"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

// backend implements api.Backend on the daemon.
type backend struct{ d *daemon }

var _ api.Backend = backend{}

func (b backend) Status(ctx context.Context) apitype.Status {
	d := b.d
	cfg := d.cfg.Load()
	client := d.mkt.Load()
	snap, _ := d.snapshot(5 * time.Second)
	st := apitype.Status{
		Version: version.Version, Instance: cfg.Instance, Summary: d.summarize(snap), Profile: d.apiProfile().Profile, ProfileReason: d.apiProfile().Reason,
		Marketplace: client.BaseURL(), Jobs: wireSnapshot(snap), StartedAt: d.started.UTC(),
		Restart: d.restartIdle.Load(), Transfer: d.progress.current(),
	}
	if tok, ok := client.Token(); ok {
		h := client.AuthHealth()
		st.Auth = apitype.AuthStatus{Authenticated: !client.PairingLost() && !h.Expired, PrinterID: tok.PrinterID,
			PairingLost: client.PairingLost(), Problem: h.Problem}
		if !tok.Expiry.IsZero() {
			e := tok.Expiry.UTC()
			st.Auth.TokenExpiry = &e
		}
		if !tok.ObtainedAt.IsZero() {
			o := tok.ObtainedAt.UTC()
			st.Auth.TokenIssuedAt = &o
		}
	}
	p := d.printerInfo()
	st.Printer = apitype.PrinterStatus{Name: p.Name, Manufacturer: p.Manufacturer, Model: p.Model}
	state, keyID, backendName, problem, advice, _, _ := d.keys.state()
	st.Key = apitype.KeyStatus{State: state, KeyID: keyID, Backend: backendName, Problem: problem, Advice: advice}
	kl := d.bridge.State()
	st.Klipper = apitype.KlipperStatus{Connected: kl.Connected, ConfigFile: cfg.Klipper.ConfigFile}
	if kl.HaveStatus {
		st.Klipper.Klippy = kl.Status.Klippy.State
		st.Klipper.PrintState = kl.Status.PrintStats.State
		st.Klipper.PrintDuration = kl.Status.PrintStats.PrintDuration
	}
	st.Klipper.Problem, st.Klipper.NextStep = klipperProblem(kl)
	st.Klipper.Version = kl.Hello.Klipper.Version
	st.Klipper.ExtraVersion = kl.Hello.ExtraVersion
	if d.kcfg != nil {
		if r := d.kcfg.Latest(); r != nil {
			st.Klipper.ConfigOK, st.Klipper.ConfigSummary, st.Klipper.ConfigFindings = r.OK(), r.StatusLine(), len(r.Findings)
		}
	}
	if pr := d.pair.status(); pr.Status == pairPending || pr.Status == pairApproved || pr.Status == pairExpired || pr.Status == pairFailed {
		st.Pairing = &pr
	}
	d.mu.Lock()
	if !d.lastPoll.IsZero() {
		lp := d.lastPoll.UTC()
		st.LastPoll = &lp
	}
	st.LastPollErr = d.lastPollErr
	d.mu.Unlock()
	switch {
	case state == keyBroken:
		st.Health = apitype.HealthBroken
	case !st.Auth.Authenticated || st.Auth.Problem != "" || st.Klipper.Problem != "" || st.Jobs.JournalProblem != "":
		st.Health = apitype.HealthDegraded
	default:
		st.Health = apitype.HealthOK
	}
	return st
}

func (b backend) CheckJobs(ctx context.Context) (apitype.JobStatus, error) {
	d := b.d
	client := d.mkt.Load()
	if _, ok := client.Token(); !ok {
		return apitype.JobStatus{}, api.Errorf(http.StatusConflict, "not_paired", "not paired: run lmnt pair")
	}
	poller := d.poller.Load()
	var js []marketplace.Job
	var err error
	if poller != nil {
		js, err = poller.PollOnce(ctx)
	} else {
		js, err = client.Poll(ctx)
	}
	d.notePoll(err)
	if err != nil {
		return apitype.JobStatus{}, marketError("polling the print queue failed", err)
	}
	d.engine.Offer(adapters.Offers(js))
	st := b.Status(ctx)
	return apitype.JobStatus{CurrentJob: st.Jobs.Active, QueueLength: len(st.Jobs.Queue), JobStarted: st.Jobs.Active != nil,
		LastCheck: st.LastPoll, Waiting: st.Jobs.Waiting}, nil
}

func (b backend) RefreshToken(ctx context.Context) (apitype.RefreshResult, error) {
	tok, err := b.d.mkt.Load().Refresh(ctx)
	if err != nil {
		return apitype.RefreshResult{}, marketError("token refresh failed", err)
	}
	return apitype.RefreshResult{PrinterID: tok.PrinterID, Expiry: tok.Expiry.UTC()}, nil
}

func (b backend) UserLogin(ctx context.Context, email, password string) (apitype.LoginResult, error) {
	jwt, err := b.d.mkt.Load().UserLogin(ctx, email, password)
	if err != nil {
		return apitype.LoginResult{}, marketError("login failed", err)
	}
	res := apitype.LoginResult{Token: jwt}
	if c, err := marketplace.ParseClaims(jwt); err == nil {
		res.UserID = c.PrinterID // the claims' sub when there is no printer id
	}
	return res, nil
}

func (b backend) RegisterPrinter(ctx context.Context, r apitype.RegisterRequest) (apitype.RegisterResult, error) {
	d := b.d
	if err := d.keys.renewIfBroken(); err != nil {
		return apitype.RegisterResult{}, err
	}
	var reg marketplace.Registration
	err := d.keys.with(func(k *identity.Key) error {
		pub := k.PublicKey()
		var err error
		reg, err = d.mkt.Load().RegisterPrinter(ctx, r.UserToken, pub[:], marketplace.PrinterInfo{
			Name: r.PrinterName, Manufacturer: r.Manufacturer, Model: r.Model})
		return err
	})
	if err != nil {
		return apitype.RegisterResult{}, marketError("registration failed", err)
	}
	d.setPrinter(printerInfo{Name: r.PrinterName, Manufacturer: r.Manufacturer, Model: r.Model,
		PrinterID: reg.Token.PrinterID, PairedAt: time.Now().UTC()})
	d.log.Info("registered", "printer_id", reg.Token.PrinterID, "name", r.PrinterName)
	d.kickLoops()
	return apitype.RegisterResult{ID: reg.Token.PrinterID, UserID: reg.UserID, PrinterName: r.PrinterName,
		Manufacturer: r.Manufacturer, Model: r.Model, KEKID: reg.KEKID, TokenExpires: reg.Token.Expiry.UTC()}, nil
}

func (b backend) StartPairing(ctx context.Context, r apitype.PairRequest) (apitype.Pairing, error) {
	return b.d.pair.start(ctx, r)
}

func (b backend) PairingStatus(ctx context.Context) (apitype.Pairing, error) {
	return b.d.pair.status(), nil
}

func (b backend) CompletePairing(ctx context.Context) (apitype.Pairing, error) {
	return b.d.pair.completeNow(ctx)
}

func (b backend) SubmitLocal(ctx context.Context, p api.LocalPrint) (string, error) {
	id, err := b.d.engine.SubmitLocal(jobs.LocalJob{
		Name: p.Name,
		Open: func(context.Context) (io.ReadCloser, error) { return p.Body() },
		Keys: jobs.KeyMaterial{DEKPackage: p.DEKPackage, IVHex: p.IVHex, FernetKey: p.FernetKey},
		Size: p.Size,
		// Closing the body frees the upload's memfd.
		Release: func() {
			if rc, err := p.Body(); err == nil {
				_ = rc.Close()
			}
		},
	})
	switch {
	case errors.Is(err, jobs.ErrLocalQueueFull):
		return "", api.Errorf(http.StatusTooManyRequests, "queue_full", "%v", err)
	case errors.Is(err, jobs.ErrTooManyFailures):
		return "", api.Errorf(http.StatusTooManyRequests, "rate_limited", "%v", err)
	case errors.Is(err, jobs.ErrJournalUnwritable):
		return "", api.Errorf(http.StatusInsufficientStorage, "state_disk_full", "%v", err)
	case err != nil:
		return "", err
	}
	b.d.log.Info("local job queued", "job", id, "name", p.Name, "size", p.Size)
	return id, nil
}

func (b backend) Jobs() apitype.Snapshot {
	s, _ := b.d.snapshot(5 * time.Second)
	return wireSnapshot(s)
}

func (b backend) CancelJob(id, reason string) error {
	err := b.d.engine.Cancel(id, reason)
	switch {
	case errors.Is(err, jobs.ErrUnknownJob):
		return api.Errorf(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, jobs.ErrFinished):
		return api.Errorf(http.StatusConflict, "finished", "%v", err)
	}
	return err
}

func (b backend) ConfirmBedClear() error {
	if err := b.d.engine.ConfirmBedClear(); errors.Is(err, jobs.ErrPrintRunning) {
		return api.Errorf(http.StatusConflict, "print_running", "%v", err)
	} else if err != nil {
		return err
	}
	b.d.log.Info("bed confirmed clear through the API")
	return nil
}

func (b backend) Keys() apitype.KeysInfo {
	state, keyID, backendName, problem, advice, pub, sealedAt := b.d.keys.state()
	ki := apitype.KeysInfo{KeyStatus: apitype.KeyStatus{State: state, KeyID: keyID, Backend: backendName, Problem: problem, Advice: advice},
		PublicKey: pub, Configured: b.d.keys.configuredBackend()}
	if pub != "" {
		ki.KeyType = identity.KeyType
	}
	if !sealedAt.IsZero() {
		s := sealedAt.UTC()
		ki.SealedAt = &s
	}
	return ki
}

func (b backend) Reseal(ctx context.Context, to string) (apitype.KeysInfo, error) {
	mode, err := seal.ParseMode(to)
	if err != nil {
		return apitype.KeysInfo{}, api.Errorf(http.StatusBadRequest, "bad_request", "%v", err)
	}
	if _, err := b.d.keys.reseal(mode); err != nil {
		return apitype.KeysInfo{}, api.Errorf(http.StatusConflict, "reseal_failed", "%v", err)
	}
	return b.Keys(), nil
}

func (b backend) ImportLegacyKey(ctx context.Context, r apitype.ImportLegacyRequest) (apitype.ImportLegacyResult, error) {
	d := b.d
	cfg := d.cfg.Load()
	dir := r.Dir
	if dir == "" {
		dir = legacyDir(cfg)
	}
	dir = filepath.Clean(dir)
	imp, err := identity.ImportLegacyKey(identity.LegacyOptions{Dir: dir, HostRoot: d.o.HostRoot, Logger: d.log})
	if err != nil {
		if errors.Is(err, identity.ErrLegacyNotFound) {
			return apitype.ImportLegacyResult{}, api.Errorf(http.StatusNotFound, "not_found", "%v in %s", err, dir)
		}
		return apitype.ImportLegacyResult{}, api.Errorf(http.StatusBadRequest, "import_failed", "%v", err)
	}
	res := apitype.ImportLegacyResult{KeyID: imp.Key.KeyID(), Source: imp.Source}
	var sameKeyFiles []string // only these may be removed: others may hold another key
	for _, f := range imp.Files {
		res.Files = append(res.Files, f.Path)
		if f.KeyID == res.KeyID {
			sameKeyFiles = append(sameKeyFiles, f.Path)
		}
	}
	legacyTok, tokErr := identity.ImportLegacyToken(dir)

	d.keys.mu.Lock()
	same := d.keys.key != nil && d.keys.key.Equal(imp.Key)
	client := d.mkt.Load()
	_, paired := client.Token()
	switch {
	case same:
		imp.Key.Zero()
		res.Unchanged = true
	case paired && !client.PairingLost() && !r.Replace && d.keys.key != nil:
		d.keys.mu.Unlock()
		imp.Key.Zero()
		return apitype.ImportLegacyResult{}, api.Errorf(http.StatusConflict, "already_paired",
			"this printer is already paired with key %s; replacing it with the old plugin's key %s needs replace (lmnt keys import-legacy --replace)",
			shortID(d.keys.key.KeyID()), shortID(res.KeyID))
	default:
		if err := d.keys.replaceLocked(imp.Key); err != nil {
			d.keys.mu.Unlock()
			imp.Key.Zero()
			return apitype.ImportLegacyResult{}, err
		}
		d.log.Info("imported the old plugin's key", "key_id", res.KeyID, "source", imp.Source)
	}
	d.keys.mu.Unlock()

	if tokErr == nil {
		tok, err := tokenFromLegacy(legacyTok)
		if err != nil {
			d.log.Warn("the old plugin's token is unusable; pair again with lmnt pair", "err", err)
		} else if err := client.SetToken(tok); err != nil {
			return res, err
		} else {
			res.TokenImported, res.PrinterID = true, tok.PrinterID
			name := legacyTok.PrinterName
			if name == "" {
				name = defaultPrinterName()
			}
			d.setPrinter(printerInfo{Name: name, PrinterID: tok.PrinterID, PairedAt: time.Now().UTC()})
			d.kickLoops()
		}
	}
	if r.RemoveSource {
		files := sameKeyFiles
		if res.TokenImported {
			files = append(files, filepath.Join(dir, filepath.FromSlash(identity.LegacyTokenFile)))
		}
		for _, f := range files {
			if err := wipeFile(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				d.log.Warn("could not remove an old plugin file", "file", f, "err", err)
				continue
			}
			res.Removed = append(res.Removed, f)
		}
	}
	return res, nil
}

// tokenFromLegacy turns the old plugin's stored token into ours.
func tokenFromLegacy(lt *identity.LegacyToken) (marketplace.Token, error) {
	claims, err := marketplace.ParseClaims(lt.Token)
	if err != nil {
		return marketplace.Token{}, err
	}
	t := marketplace.Token{Value: lt.Token, PrinterID: claims.PrinterID, Expiry: claims.Expiry, ObtainedAt: claims.IssuedAt}
	if t.PrinterID == "" {
		t.PrinterID = lt.PrinterID
	}
	if t.Expiry.IsZero() {
		t.Expiry = lt.ExpiresAt
	}
	if t.ObtainedAt.IsZero() {
		t.ObtainedAt = lt.CreatedAt
	}
	if t.ObtainedAt.IsZero() {
		t.ObtainedAt = time.Now()
	}
	if t.Expiry.IsZero() {
		t.Expiry = t.ObtainedAt.Add(30 * 24 * time.Hour)
	}
	return t, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func (b backend) RestartWhenIdle() apitype.RestartResult {
	d := b.d
	d.restartIdle.Store(true)
	d.wakeStatus()
	snap, _ := d.snapshot(5 * time.Second)
	if snap.Active != nil {
		d.log.Info("restart requested: waiting for the active job to end", "job", snap.Active.ID, "state", snap.Active.State)
		return apitype.RestartResult{Pending: true, Message: "lmntd restarts when job " + snap.Active.ID + " (" + string(snap.Active.State) + ") has ended"}
	}
	d.log.Info("restart requested: idle, restarting now")
	return apitype.RestartResult{Message: "lmntd is idle and restarts now"}
}

func (b backend) Doctor(ctx context.Context, offline bool) apitype.DoctorReport {
	return b.d.doctor(ctx, offline)
}

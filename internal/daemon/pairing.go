package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
)

// printerInfoFile records how the printer was introduced to the
// marketplace (name, maker, model, id). No secrets.
const printerInfoFile = "printer.json"

type printerInfo struct {
	Name         string    `json:"name"`
	Manufacturer string    `json:"manufacturer,omitempty"`
	Model        string    `json:"model,omitempty"`
	PrinterID    string    `json:"printer_id,omitempty"`
	PairedAt     time.Time `json:"paired_at"`
}

func loadPrinterInfo(dir string) printerInfo {
	var p printerInfo
	if data, err := os.ReadFile(filepath.Join(dir, printerInfoFile)); err == nil {
		_ = json.Unmarshal(data, &p)
	}
	return p
}

func savePrinterInfo(dir string, p printerInfo) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, printerInfoFile), append(data, '\n'))
}

func (d *daemon) setPrinter(p printerInfo) {
	// Names come from the owner or the marketplace, and are shown in
	// terminals, the pairing page and Klipper's console.
	p.Name, p.Manufacturer, p.Model = textsafe.Clean(p.Name, 100), textsafe.Clean(p.Manufacturer, 100), textsafe.Clean(p.Model, 100)
	if err := savePrinterInfo(d.cfg.Load().Paths.StateDirectory, p); err != nil {
		d.log.Warn("cannot record the printer's name", "err", err)
	}
	d.mu.Lock()
	d.printer = p
	d.mu.Unlock()
}

func (d *daemon) printerInfo() printerInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.printer
}

// Pairing statuses as the API shows them.
const (
	pairPending  = "pending"
	pairApproved = "approved"
	pairPaired   = "paired"
	pairExpired  = "expired"
	pairFailed   = "failed"
	pairNone     = "not_started"
)

// pairing runs at most one pairing session at a time: concurrent start
// requests get the session already open.
type pairing struct {
	d *daemon

	mu      sync.Mutex
	cur     *pairSession
	stopped bool // lmntd is shutting down
}

type pairSession struct {
	id        string // the marketplace's session id: a credential, never shown
	code      string
	expires   time.Time
	info      printerInfo
	status    string
	message   string
	printerID string
	complete  sync.Mutex // one pair/complete at a time
	cancel    context.CancelFunc
}

func newPairing(d *daemon) *pairing { return &pairing{d: d} }

// pendingPairingFile keeps an open pairing session across restarts: the
// owner may read the code on the first boot and type it after lmntd (or
// the board) restarted. It holds the marketplace's session id, which can
// collect the printer's token, so it is written 0600 into the state
// directory (lmntd's own, 0700) and removed as soon as the session ends.
const pendingPairingFile = "pairing-pending.json"

type pendingPairing struct {
	SessionID string      `json:"session_id"`
	Code      string      `json:"code"`
	ExpiresAt time.Time   `json:"expires_at"`
	Printer   printerInfo `json:"printer"`
}

func (p *pairing) pendingPath() string {
	return filepath.Join(p.d.cfg.Load().Paths.StateDirectory, pendingPairingFile)
}

func (p *pairing) savePending(s *pairSession) {
	data, err := json.Marshal(pendingPairing{SessionID: s.id, Code: s.code, ExpiresAt: s.expires, Printer: s.info})
	if err == nil {
		err = atomicfile.Write(p.pendingPath(), data)
	}
	if err != nil {
		p.d.log.Warn("cannot record the pending pairing; it will not survive a restart", "err", err)
	}
}

func (p *pairing) dropPending() {
	if err := os.Remove(p.pendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.d.log.Warn("cannot remove the ended pairing session's file", "file", p.pendingPath(), "err", err)
	}
}

// resume picks up a pairing session a previous run left open and waits for
// its approval again, until it expires.
func (p *pairing) resume() {
	data, err := os.ReadFile(p.pendingPath())
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var pp pendingPairing
	if err == nil {
		err = json.Unmarshal(data, &pp)
	}
	switch {
	case err != nil || pp.SessionID == "" || pp.Code == "":
		p.d.log.Warn("ignoring an unreadable pending pairing session", "file", p.pendingPath(), "err", err)
		p.dropPending()
		return
	case !pp.ExpiresAt.IsZero() && time.Now().After(pp.ExpiresAt):
		p.d.log.Info("the pairing code of the previous run expired", "code", pp.Code, "expired", pp.ExpiresAt)
		p.dropPending()
		return
	}
	client := p.d.mkt.Load()
	if _, paired := client.Token(); paired && !client.PairingLost() {
		p.dropPending() // paired since, e.g. by an imported token
		return
	}
	s := &pairSession{id: pp.SessionID, code: pp.Code, expires: pp.ExpiresAt, info: pp.Printer, status: pairPending,
		message: "Enter the code in the LMNT Marketplace to pair this printer"}
	p.mu.Lock()
	p.cur = s
	p.mu.Unlock()
	p.d.log.Info("resuming the pending pairing", "code", s.code, "expires", s.expires)
	go p.wait(p.waitContext(s), client, s)
}

// waitContext bounds the wait for approval by the code's expiry.
func (p *pairing) waitContext(s *pairSession) context.Context {
	wctx, cancel := context.WithCancel(context.Background())
	if !s.expires.IsZero() {
		wctx, cancel = context.WithDeadline(context.Background(), s.expires.Add(5*time.Second))
	}
	s.cancel = cancel
	return wctx
}

func (p *pairing) view(s *pairSession) apitype.Pairing {
	out := apitype.Pairing{Status: s.status, Message: s.message, PrinterID: s.printerID, PrinterName: s.info.Name}
	if s.status == pairPending || s.status == pairApproved {
		out.PairingCode = s.code
	}
	if !s.expires.IsZero() {
		e := s.expires
		out.ExpiresAt = &e
	}
	return out
}

func (p *pairing) start(ctx context.Context, r apitype.PairRequest) (apitype.Pairing, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.cur; s != nil && (s.status == pairPending || s.status == pairApproved) &&
		(s.expires.IsZero() || time.Now().Before(s.expires)) {
		return p.view(s), nil
	}
	d := p.d
	if d.apiProfile().Profile == config.ProfileLegacy {
		return apitype.Pairing{}, api.Errorf(http.StatusBadRequest, "legacy_profile",
			"api_profile is legacy: that marketplace registers printers with a user login (lmnt register), not a pairing code")
	}
	client := d.mkt.Load()
	if tok, paired := client.Token(); paired && !client.PairingLost() && !r.Force {
		return apitype.Pairing{}, api.Errorf(http.StatusConflict, "already_paired",
			"already paired as printer %s; pair again only on purpose (lmnt pair --force)", tok.PrinterID)
	}
	if err := d.keys.renewIfBroken(); err != nil {
		return apitype.Pairing{}, fmt.Errorf("making a new printer key: %w", err)
	}
	info := printerInfo{Name: r.PrinterName, Manufacturer: r.Manufacturer, Model: r.Model}
	if info.Name == "" {
		// Pairing again (after a lost pairing, from the page) keeps the
		// name the owner gave the printer.
		info.Name = d.printerInfo().Name
	}
	if info.Name == "" {
		info.Name = defaultPrinterName()
	}
	var sess marketplace.PairingSession
	err := d.keys.with(func(k *identity.Key) error {
		pub := k.PublicKey()
		var err error
		sess, err = client.PairStart(ctx, pub[:], marketplace.PrinterInfo{Name: info.Name, Manufacturer: info.Manufacturer,
			Model: info.Model, ExtruderCount: max(r.ExtruderCount, 1)})
		return err
	})
	if err != nil {
		return apitype.Pairing{}, marketError("pairing could not start", err)
	}
	s := &pairSession{id: sess.SessionID, code: sess.Code, expires: sess.ExpiresAt, info: info, status: pairPending,
		message: "Enter the code in the LMNT Marketplace to pair this printer"}
	if p.cur != nil && p.cur.cancel != nil {
		p.cur.cancel()
	}
	wctx := p.waitContext(s)
	p.cur = s
	p.savePending(s)
	d.log.Info("pairing started", "code", s.code, "expires", s.expires)
	_ = d.bridge.Console("pairing code " + s.code + ": enter it in the LMNT Marketplace")
	go p.wait(wctx, client, s)
	return p.view(s), nil
}

// wait follows the session until it is approved, then collects the token.
func (p *pairing) wait(ctx context.Context, client *marketplace.Client, s *pairSession) {
	defer s.cancel()
	err := client.WaitForApproval(ctx, s.id, p.d.o.PairingPollInterval)
	if err != nil {
		p.mu.Lock()
		superseded := p.stopped || p.cur != s
		p.mu.Unlock()
		if superseded && errors.Is(err, context.Canceled) {
			// lmntd stops (the session stays recorded for the next run),
			// or a newer session replaced this one and its file.
			return
		}
		p.dropPending()
		p.mu.Lock()
		if s.status == pairPending {
			s.status, s.message = pairFailed, textsafe.Clean("pairing ended: "+err.Error(), 500)
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, marketplace.ErrPairingRejected) {
				s.status = pairExpired
				s.message = "the pairing code expired or was refused: start pairing again"
			}
		}
		p.mu.Unlock()
		p.d.log.Warn("pairing did not complete", "err", err)
		return
	}
	p.mu.Lock()
	if s.status == pairPending {
		s.status, s.message = pairApproved, "approved; collecting the printer token"
	}
	p.mu.Unlock()
	if _, err := p.complete(context.Background(), client, s); err != nil {
		p.d.log.Error("pairing approved but the token could not be collected", "err", err)
	}
}

// complete collects the token of an approved session (once).
func (p *pairing) complete(ctx context.Context, client *marketplace.Client, s *pairSession) (apitype.Pairing, error) {
	s.complete.Lock()
	defer s.complete.Unlock()
	p.mu.Lock()
	st := s.status
	p.mu.Unlock()
	switch st {
	case pairPaired:
		return p.snapshot(s), nil
	case pairPending:
		return p.snapshot(s), api.Errorf(http.StatusConflict, "not_approved", "the pairing code %s has not been approved yet", s.code)
	case pairApproved:
	default:
		return p.snapshot(s), api.Errorf(http.StatusConflict, "pairing_ended", "the pairing session ended (%s): start pairing again", st)
	}
	tok, err := client.PairComplete(ctx, s.id, boxOpener{kr: p.d.keys})
	if err != nil {
		p.mu.Lock()
		s.message = textsafe.Clean("collecting the token failed: "+err.Error(), 500)
		p.mu.Unlock()
		return p.snapshot(s), marketError("pairing could not complete", err)
	}
	info := s.info
	info.PrinterID, info.PairedAt = tok.PrinterID, time.Now().UTC()
	p.d.setPrinter(info)
	p.mu.Lock()
	current := p.cur == s
	p.mu.Unlock()
	if current {
		p.dropPending()
	}
	p.mu.Lock()
	s.status, s.printerID, s.message = pairPaired, tok.PrinterID, "paired as "+info.Name
	p.mu.Unlock()
	p.d.log.Info("paired", "printer_id", tok.PrinterID, "name", info.Name, "token", tok)
	_ = p.d.bridge.Console("paired with the LMNT Marketplace as " + info.Name)
	p.d.kickLoops()
	return p.snapshot(s), nil
}

func (p *pairing) snapshot(s *pairSession) apitype.Pairing {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view(s)
}

func (p *pairing) status() apitype.Pairing {
	p.mu.Lock()
	s := p.cur
	if s != nil {
		if s.status == pairPending && !s.expires.IsZero() && time.Now().After(s.expires) {
			s.status, s.message = pairExpired, "the pairing code expired: start pairing again"
		}
		v := p.view(s)
		p.mu.Unlock()
		return v
	}
	p.mu.Unlock()
	client := p.d.mkt.Load()
	if tok, ok := client.Token(); ok && !client.PairingLost() {
		return apitype.Pairing{Status: pairPaired, PrinterID: tok.PrinterID, PrinterName: p.d.printerInfo().Name}
	}
	return apitype.Pairing{Status: pairNone, Message: "not paired: run lmnt pair"}
}

func (p *pairing) completeNow(ctx context.Context) (apitype.Pairing, error) {
	p.mu.Lock()
	s := p.cur
	p.mu.Unlock()
	if s == nil {
		st := p.status()
		if st.Status == pairPaired {
			return st, nil
		}
		return st, api.Errorf(http.StatusConflict, "no_pairing", "no pairing session: start one with pair/start")
	}
	return p.complete(ctx, p.d.mkt.Load(), s)
}

func (p *pairing) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.cur != nil && p.cur.cancel != nil {
		p.cur.cancel()
	}
}

func defaultPrinterName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "Klipper printer"
}

// marketError turns a marketplace failure into an API error: the
// marketplace's own 4xx stays a client error, the rest is a bad gateway.
func marketError(what string, err error) error {
	var he *marketplace.HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 {
		return api.Errorf(http.StatusBadRequest, "marketplace_refused", "%s: %v", what, err)
	}
	switch {
	case errors.Is(err, marketplace.ErrNotPaired):
		return api.Errorf(http.StatusConflict, "not_paired", "%s: not paired: run lmnt pair", what)
	case errors.Is(err, marketplace.ErrPairingLost):
		return api.Errorf(http.StatusConflict, "pairing_lost", "%s: %v", what, err)
	}
	return api.Errorf(http.StatusBadGateway, "marketplace_unreachable", "%s: %v", what, err)
}

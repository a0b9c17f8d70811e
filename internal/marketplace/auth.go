package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/backoff"
	"github.com/lmnt-marketplace/lmntd/internal/clock"
	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// Token returns the current printer token and whether there is one.
func (c *Client) Token() (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok, c.has
}

// PairingLost reports whether the pairing was declared lost per the
// AuthPolicy (also across restarts, until the printer is paired again).
func (c *Client) PairingLost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

// SetToken stores a new printer token (pairing, registration, import of the
// old plugin's token) and clears any pairing-lost state.
func (c *Client) SetToken(t Token) error {
	// storeMu keeps the file and the in-memory token in the same order
	// when a pairing races a refresh.
	c.storeMu.Lock()
	defer c.storeMu.Unlock()
	if err := c.store.Save(t); err != nil {
		return err
	}
	c.mu.Lock()
	c.tok, c.has, c.lost = t, true, false
	if c.auth.Refusals > 0 {
		c.auth = authState{}
		c.saveAuthStateLocked()
	}
	c.auth.failingSince, c.auth.lastError = time.Time{}, ""
	c.authChangedLocked()
	c.mu.Unlock()
	c.log.Info("marketplace: printer token stored", "token", t)
	return nil
}

// ImportToken stores a printer token obtained elsewhere (the old plugin's
// tokens/printer_token.json) so a migrated printer keeps its pairing. The
// claims win over printerID and expiry, as for every token; with no expiry
// anywhere the legacy 30 days apply.
func (c *Client) ImportToken(jwt, printerID string, expiry time.Time) (Token, error) {
	t, err := newToken(jwt, printerID, expiry, c.clock.Now(), legacyDefaultTokenTT)
	if err != nil {
		return Token{}, err
	}
	return t, c.SetToken(t)
}

// currentToken is the token for an authenticated call.
func (c *Client) currentToken() (Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.lost:
		return Token{}, ErrPairingLost
	case !c.has:
		return Token{}, ErrNotPaired
	}
	return c.tok, nil
}

// markLost records the pairing as lost, once: the callback and the log line
// fire only on the transition.
func (c *Client) markLost(cause error) {
	c.mu.Lock()
	already := c.lost
	c.lost = true
	c.mu.Unlock()
	if already {
		return
	}
	c.storeMu.Lock()
	err := c.store.MarkPairingLost(c.clock.Now(), cause.Error())
	c.storeMu.Unlock()
	if err != nil {
		c.log.Error("marketplace: could not record lost pairing", "err", err)
	}
	c.log.Error("marketplace: PAIRING LOST: the marketplace revoked the printer token or kept refusing its refresh; pair the printer again (key and old token file kept for diagnosis)", "err", cause)
	if c.opts.OnPairingLost != nil {
		c.opts.OnPairingLost(fmt.Errorf("%w: %v", ErrPairingLost, cause))
	}
}

type refreshAnswer struct {
	PrinterToken string          `json:"printer_token"`
	Token        string          `json:"token"`
	TokenExpires json.RawMessage `json:"token_expires"`
	Expiry       json.RawMessage `json:"expiry"`
}

// Refresh exchanges the printer token for a new one (one attempt). A
// refused refresh (401/403) counts toward the AuthPolicy; when that
// declares the pairing lost, ErrPairingLost is returned. Every other
// failure, refusals included, leaves the pairing intact and is for the
// caller to retry.
func (c *Client) Refresh(ctx context.Context) (Token, error) {
	old, err := c.currentToken()
	if err != nil {
		return Token{}, err
	}
	return c.refreshFrom(ctx, old)
}

// refreshFrom refreshes unless another caller already replaced used.
func (c *Client) refreshFrom(ctx context.Context, used Token) (Token, error) {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	cur, err := c.currentToken()
	if err != nil {
		return Token{}, err
	}
	if cur.Value != used.Value {
		return cur, nil // refreshed concurrently: use the new one
	}
	var body any
	if c.opts.Profile == ProfileCurrent {
		body = struct{}{}
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint(c.paths.refresh, nil), body, cur.Value)
	if err != nil {
		return Token{}, err
	}
	var ans refreshAnswer
	if err := c.do(req, &ans); err != nil {
		if ctx.Err() != nil {
			return Token{}, err
		}
		if c.noteRefresh(err) {
			c.markLost(err)
			return Token{}, fmt.Errorf("%w: %v", ErrPairingLost, err)
		}
		if code := statusCode(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
			h := c.AuthHealth()
			c.log.Warn("marketplace: token refresh refused; the pairing stays, retrying", "refusals", h.Refusals, "since", h.RefusedSince, "err", err)
		}
		return Token{}, err
	}
	tok, err := c.tokenFromRefresh(ans, cur.PrinterID)
	if err != nil {
		c.noteRefresh(err)
		return Token{}, err
	}
	c.noteRefresh(nil)
	if err := c.SetToken(tok); err != nil {
		return Token{}, err
	}
	return tok, nil
}

func (c *Client) tokenFromRefresh(ans refreshAnswer, printerID string) (Token, error) {
	now := c.clock.Now()
	if c.opts.Profile == ProfileCurrent {
		// Current: printer_token and token_expires are both required.
		if ans.PrinterToken == "" || len(ans.TokenExpires) == 0 || string(ans.TokenExpires) == "null" {
			return Token{}, fmt.Errorf("%w: refresh answer lacks printer_token or token_expires", ErrBadResponse)
		}
		exp, err := parseExpiry(ans.TokenExpires)
		if err != nil {
			return Token{}, fmt.Errorf("%w: refresh answer: %v", ErrBadResponse, err)
		}
		return newToken(ans.PrinterToken, printerID, exp, now, 0)
	}
	// Legacy: printer_token or token; token_expires or expiry; none ⇒ 30 days.
	jwt := ans.PrinterToken
	if jwt == "" {
		jwt = ans.Token
	}
	raw := ans.TokenExpires
	if len(raw) == 0 || string(raw) == "null" {
		raw = ans.Expiry
	}
	exp, err := parseExpiry(raw)
	if err != nil {
		return Token{}, fmt.Errorf("%w: refresh answer: %v", ErrBadResponse, err)
	}
	return newToken(jwt, printerID, exp, now, legacyDefaultTokenTT)
}

// RefresherOptions tune RunTokenRefresher. Zero values: retry backoff 30 s
// doubling to 1 h.
type RefresherOptions struct {
	RetryMin, RetryMax time.Duration
}

// RunTokenRefresher keeps the token fresh per the spec's policy until ctx
// ends. Failed refreshes, refused ones included, are retried with backoff
// (at least the server's Retry-After), never abandoned; it returns
// ErrPairingLost (after OnPairingLost fired) when the AuthPolicy declares
// the pairing lost, and ErrNotPaired without a token.
func (c *Client) RunTokenRefresher(ctx context.Context, o RefresherOptions) error {
	if o.RetryMin <= 0 {
		o.RetryMin = 30 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Hour
	}
	bo := backoff.Backoff{Min: o.RetryMin, Max: o.RetryMax}
	justRefreshed := false
	for {
		tok, err := c.currentToken()
		if err != nil {
			return err
		}
		now := c.clock.Now()
		due, wait := RefreshDecision(tok, now)
		if due && justRefreshed {
			// A token whose whole lifetime is inside the refresh window
			// (short-lived tokens) would otherwise be refreshed in a tight
			// loop: wait until 80 % of its lifetime, at least a minute.
			due, wait = false, max(tok.ObtainedAt.Add(tok.Expiry.Sub(tok.ObtainedAt)*4/5).Sub(now), time.Minute)
		}
		if !due {
			justRefreshed = false
			if err := clock.Sleep(ctx, c.clock, wait); err != nil {
				return err
			}
			continue
		}
		if _, err := c.Refresh(ctx); err != nil {
			if errors.Is(err, ErrPairingLost) || ctx.Err() != nil {
				return err
			}
			d := backoff.AfterServerWait(err, backoff.Jitter(bo.Next(), 0.2))
			c.log.Warn("marketplace: token refresh failed, retrying", "in", d, "err", err)
			if err := clock.Sleep(ctx, c.clock, d); err != nil {
				return err
			}
			continue
		}
		bo.Reset()
		justRefreshed = true
	}
}

// authedDo sends an authenticated request to the marketplace origin; build
// makes a fresh request for a token. A 401 answer triggers one refresh and
// one retry: a 401 never unpairs the printer by itself (see AuthPolicy).
// The caller owns the response body.
func (c *Client) authedDo(ctx context.Context, client *http.Client, build func(token string) (*http.Request, error)) (*http.Response, error) {
	tok, err := c.currentToken()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		req, err := build(tok.Value)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				c.noteUnreachable()
			}
			c.transportFailed(ctx, err)
			return nil, fmt.Errorf("marketplace: %s %s: %w", req.Method, redact.URL(req.URL), redact.Error(err))
		}
		c.noteAnswer(resp.StatusCode)
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			c.requestFailed(statusErrorClass(resp.StatusCode))
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		herr := c.readHTTPError(req, resp)
		drainAndClose(resp.Body)
		c.log.Info("marketplace: token refused, refreshing and retrying", "url", herr.URL)
		if tok, err = c.refreshFrom(ctx, tok); err != nil {
			return nil, fmt.Errorf("%w (after %v)", err, herr)
		}
	}
}

// authedJSON is authedDo for a JSON call: 2xx answers decode into out.
func (c *Client) authedJSON(ctx context.Context, method string, u *url.URL, body, out any) error {
	var sent *http.Request
	resp, err := c.authedDo(ctx, c.http, func(token string) (*http.Request, error) {
		r, err := c.newRequest(ctx, method, u, body, token)
		sent = r
		return r, err
	})
	if err != nil {
		return err
	}
	defer drainAndClose(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.readHTTPError(sent, resp)
	}
	if err := decodeJSON(sent, resp, out); err != nil {
		c.requestFailed(ErrorBadResponse)
		return err
	}
	return nil
}

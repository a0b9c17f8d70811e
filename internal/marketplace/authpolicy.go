package marketplace

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// AuthPolicy is the rule for declaring the pairing lost. A refused token
// refresh (HTTP 401 or 403) is a fact about the marketplace's answer, not
// yet about the pairing: an auth outage at the marketplace answers 401 to
// the whole fleet for a while, and un-pairing on it would strand every
// printer until its owner pairs it again by hand. So the pairing is lost
// only on
//
//   - an explicit revocation: a 401/403 refresh answer whose error says the
//     token or printer was revoked (the body's "error", "code" or "message"
//     contains "revoked"); or
//   - persistent refusal: at least RefusalCount refused refreshes in a row,
//     the first of them at least RefusalSpan ago, with no accepted refresh
//     in between.
//
// Until then the refresher keeps retrying with backoff, status and doctor
// show the refusals (AuthHealth), and the other loops carry on with the
// token they have. The streak survives restarts (a file in the state
// directory) and ends with the first accepted refresh or a new pairing.
type AuthPolicy struct {
	RefusalCount int           // 0 ⇒ 5
	RefusalSpan  time.Duration // 0 ⇒ 24 h
}

// Defaults of AuthPolicy.
const (
	DefaultRefusalCount = 5
	DefaultRefusalSpan  = 24 * time.Hour
)

func (p AuthPolicy) withDefaults() AuthPolicy {
	if p.RefusalCount <= 0 {
		p.RefusalCount = DefaultRefusalCount
	}
	if p.RefusalSpan <= 0 {
		p.RefusalSpan = DefaultRefusalSpan
	}
	return p
}

// authState is the running record of refresh trouble.
type authState struct {
	// Refused streak (persisted).
	RefusedSince time.Time `json:"refused_since,omitzero"`
	Refusals     int       `json:"refusals,omitempty"`
	LastRefusal  string    `json:"last_refusal,omitempty"`
	// Other refresh failures (network, 5xx): in memory only.
	failingSince time.Time
	lastError    string
}

// AuthRefusedFileName holds the refused-refresh streak.
const AuthRefusedFileName = "marketplace-auth-refused.json"

func loadAuthState(dir string) (authState, error) {
	b, err := os.ReadFile(filepath.Join(dir, AuthRefusedFileName))
	if errors.Is(err, os.ErrNotExist) {
		return authState{}, nil
	}
	if err != nil {
		return authState{}, fmt.Errorf("marketplace: reading %s: %w", AuthRefusedFileName, err)
	}
	var st authState
	if err := json.Unmarshal(b, &st); err != nil {
		// A damaged streak file must not keep the daemon from starting:
		// the streak restarts, which only delays an un-pairing.
		return authState{}, nil
	}
	return st, nil
}

func (c *Client) saveAuthStateLocked() {
	path := filepath.Join(c.opts.StateDir, AuthRefusedFileName)
	var err error
	if c.auth.Refusals == 0 {
		if err = os.Remove(path); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	} else {
		b, _ := json.Marshal(c.auth)
		err = writeFileAtomic(path, append(b, '\n'))
	}
	if err != nil {
		c.log.Warn("marketplace: could not record the refresh refusals", "err", err)
	}
}

// isRevocation tells an explicit revocation answer from a plain refusal.
func isRevocation(he *HTTPError) bool {
	if he.StatusCode != http.StatusUnauthorized && he.StatusCode != http.StatusForbidden {
		return false
	}
	var body map[string]any
	if json.Unmarshal([]byte(he.Body), &body) != nil {
		return false
	}
	for _, k := range []string{"error", "code", "message"} {
		if s, ok := body[k].(string); ok && strings.Contains(strings.ToLower(s), "revoked") {
			return true
		}
	}
	return false
}

// AuthChanged is closed the next time the token or the refresh trouble
// changes (what AuthHealth reports), so status can follow without polling.
func (c *Client) AuthChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authChanged
}

func (c *Client) authChangedLocked() {
	close(c.authChanged)
	c.authChanged = make(chan struct{})
}

// noteRefresh records the outcome of a refresh attempt and reports
// whether the pairing is now lost (per AuthPolicy).
func (c *Client) noteRefresh(err error) (lost bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.authChangedLocked()
	now := c.clock.Now()
	if err == nil {
		had := c.auth.Refusals > 0
		c.auth = authState{}
		if had {
			c.saveAuthStateLocked()
		}
		return false
	}
	var he *HTTPError
	if !errors.As(err, &he) || (he.StatusCode != http.StatusUnauthorized && he.StatusCode != http.StatusForbidden) {
		if c.auth.failingSince.IsZero() {
			c.auth.failingSince = now
		}
		c.auth.lastError = err.Error()
		return false
	}
	if c.auth.failingSince.IsZero() {
		c.auth.failingSince = now
	}
	c.auth.lastError = err.Error()
	if c.auth.Refusals == 0 {
		c.auth.RefusedSince = now
	}
	c.auth.Refusals++
	c.auth.LastRefusal = fmt.Sprintf("HTTP %d: %s", he.StatusCode, he.Body)
	c.saveAuthStateLocked()
	p := c.opts.Auth
	return isRevocation(he) || (c.auth.Refusals >= p.RefusalCount && now.Sub(c.auth.RefusedSince) >= p.RefusalSpan)
}

// AuthHealth is the state of the printer's credential, for status and
// doctor: anything but OK degrades health.
type AuthHealth struct {
	OK bool
	// Problem says what is wrong, for the owner ("" when OK).
	Problem string
	// Expired: the token's expiry has passed.
	Expired bool
	// Refusals is the current streak of refused refreshes, since
	// RefusedSince; the pairing is declared lost at the policy's limits.
	Refusals     int
	RefusedSince time.Time
	// FailingSince is when refreshing started to fail (zero when it works).
	FailingSince time.Time
}

// AuthHealth reports whether the token is usable and refreshable.
func (c *Client) AuthHealth() AuthHealth {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	h := AuthHealth{OK: true, Refusals: c.auth.Refusals, RefusedSince: c.auth.RefusedSince, FailingSince: c.auth.failingSince}
	var problems []string
	if c.has && !c.tok.Expiry.IsZero() && !now.Before(c.tok.Expiry) {
		h.Expired = true
		problems = append(problems, "printer token expired "+c.tok.Expiry.UTC().Format(time.RFC3339))
	}
	switch {
	case c.auth.Refusals > 0:
		p := c.opts.Auth
		problems = append(problems, fmt.Sprintf("the marketplace refused the token refresh %d time(s) since %s (%s); retrying, the pairing is declared lost after %d refusals over %s",
			c.auth.Refusals, c.auth.RefusedSince.UTC().Format(time.RFC3339), c.auth.LastRefusal, p.RefusalCount, p.RefusalSpan))
	case !c.auth.failingSince.IsZero():
		problems = append(problems, "token refresh failing since "+c.auth.failingSince.UTC().Format(time.RFC3339)+": "+c.auth.lastError)
	}
	if len(problems) > 0 {
		h.OK, h.Problem = false, strings.Join(problems, "; ")
	}
	return h
}

package marketplace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/clock"
)

// PrinterInfo describes the printer to the marketplace.
type PrinterInfo struct {
	Name, Manufacturer, Model string
	ExtruderCount             int // 1..4; 0 ⇒ 1
}

// PairingSession is an open pairing: the owner enters Code in the web shop.
type PairingSession struct {
	SessionID string
	Code      string
	ExpiresAt time.Time // zero when the server did not say
}

// BoxOpener opens a NaCl box addressed to the printer key. It keeps the
// private key out of this package.
type BoxOpener interface {
	OpenBox(ciphertext, nonce, senderPub []byte) ([]byte, error)
}

// Pairing errors.
var (
	// ErrPairingRejected: the session ended without approval (expired,
	// rejected, cancelled).
	ErrPairingRejected = errors.New("marketplace: pairing session ended without approval")
	// ErrSealedNeedsOpener: the marketplace sealed its answer and no
	// BoxOpener was given.
	ErrSealedNeedsOpener = errors.New("marketplace: sealed pairing answer needs the printer key")
)

// KeyID is the spec's key_id: lowercase hex SHA-256 of the raw public key.
func KeyID(pub []byte) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

func checkPublicKey(pub []byte) error {
	if len(pub) != 32 {
		return fmt.Errorf("marketplace: printer public key is %d bytes, want 32 (X25519)", len(pub))
	}
	return nil
}

// PairStart opens a pairing session for the printer's X25519 public key.
func (c *Client) PairStart(ctx context.Context, pub []byte, info PrinterInfo) (PairingSession, error) {
	if err := checkPublicKey(pub); err != nil {
		return PairingSession{}, err
	}
	n := info.ExtruderCount
	if n == 0 {
		n = 1
	}
	if n < 1 || n > 4 {
		return PairingSession{}, fmt.Errorf("marketplace: extruder_count %d out of range 1..4", n)
	}
	body := map[string]any{
		"public_key": base64.StdEncoding.EncodeToString(pub),
		"key_type":   "x25519",
		"key_id":     KeyID(pub),
		"printer": map[string]any{
			"name": info.Name, "manufacturer": info.Manufacturer, "model": info.Model, "extruder_count": n,
		},
	}
	var ans struct {
		SessionID   flexString      `json:"session_id"`
		PairingCode flexString      `json:"pairing_code"`
		ExpiresAt   json.RawMessage `json:"expires_at"`
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint(pathPairStart, nil), body, "")
	if err != nil {
		return PairingSession{}, err
	}
	if err := c.do(req, &ans); err != nil {
		return PairingSession{}, err
	}
	if ans.SessionID == "" || ans.PairingCode == "" {
		return PairingSession{}, fmt.Errorf("%w: pair/start answer lacks session_id or pairing_code", ErrBadResponse)
	}
	// The session's expiry only tells the owner how long the code is good
	// for: one we cannot read is shown as unknown, never a reason to fail.
	exp, err := parseWireTime(ans.ExpiresAt)
	if err != nil && !errors.Is(err, errNoTime) {
		c.log.Warn("marketplace: pair/start expires_at not understood; the code's lifetime is unknown", "problem", err)
	}
	return PairingSession{SessionID: string(ans.SessionID), Code: string(ans.PairingCode), ExpiresAt: exp}, nil
}

// PairStatus asks once how the session stands. approved is true when the
// status is approved, ready or authorized; a terminal refusal returns
// ErrPairingRejected.
func (c *Client) PairStatus(ctx context.Context, sessionID string) (status string, approved bool, err error) {
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint(pathPairStatus, nil), map[string]string{"session_id": sessionID}, "")
	if err != nil {
		return "", false, err
	}
	var ans struct {
		Status string `json:"status"`
	}
	if err := c.do(req, &ans); err != nil {
		return "", false, err
	}
	st := strings.ToLower(strings.TrimSpace(ans.Status))
	switch st {
	case "approved", "ready", "authorized":
		return st, true, nil
	case "expired", "rejected", "denied", "cancelled", "canceled", "failed":
		return st, false, fmt.Errorf("%w: status %q", ErrPairingRejected, st)
	case "":
		return "", false, fmt.Errorf("%w: pair/status answer lacks status", ErrBadResponse)
	}
	return st, false, nil
}

// WaitForApproval polls PairStatus every interval (0 ⇒ the spec's 2 s)
// until the session is approved, refused, or ctx ends. Transient errors are
// logged and polled through.
func (c *Client) WaitForApproval(ctx context.Context, sessionID string, interval time.Duration) error {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	for {
		_, ok, err := c.PairStatus(ctx, sessionID)
		switch {
		case ok:
			return nil
		case errors.Is(err, ErrPairingRejected):
			return err
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			c.log.Warn("marketplace: pairing status check failed", "err", err)
		}
		if err := clock.Sleep(ctx, c.clock, interval); err != nil {
			return err
		}
	}
}

// tokenAnswer is the token-bearing JSON of pair/complete, sealed or not.
type tokenAnswer struct {
	Token     string          `json:"token"`
	ExpiresAt json.RawMessage `json:"expires_at"`
	Expiry    json.RawMessage `json:"expiry"`
	PrinterID flexString      `json:"printer_id"`
}

// PairComplete collects the printer token of an approved session and stores
// it. A sealed answer ({ciphertext, nonce, sender_pubkey}) is opened with
// opener; its plaintext is the same JSON or a bare token.
func (c *Client) PairComplete(ctx context.Context, sessionID string, opener BoxOpener) (Token, error) {
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint(pathPairComplete, nil), map[string]string{"session_id": sessionID}, "")
	if err != nil {
		return Token{}, err
	}
	var ans struct {
		tokenAnswer
		Ciphertext   string `json:"ciphertext"`
		Nonce        string `json:"nonce"`
		SenderPubkey string `json:"sender_pubkey"`
	}
	if err := c.do(req, &ans); err != nil {
		return Token{}, err
	}
	ta := ans.tokenAnswer
	if ta.Token == "" && ans.Ciphertext != "" {
		if ta, err = openSealedAnswer(opener, ans.Ciphertext, ans.Nonce, ans.SenderPubkey); err != nil {
			return Token{}, err
		}
	}
	tok, err := newToken(ta.Token, string(ta.PrinterID), c.answerExpiry("pair/complete", ta.ExpiresAt, ta.Expiry), c.clock.Now(), unknownExpiryLifetime)
	if err != nil {
		return Token{}, fmt.Errorf("pair/complete: %w", err)
	}
	if err := c.SetToken(tok); err != nil {
		return Token{}, err
	}
	return tok, nil
}

func openSealedAnswer(opener BoxOpener, ct64, nonce64, sender64 string) (tokenAnswer, error) {
	if opener == nil {
		return tokenAnswer{}, ErrSealedNeedsOpener
	}
	dec := func(name, s string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: sealed pair/complete: %s is not standard Base64", ErrBadResponse, name)
		}
		return b, nil
	}
	ct, err := dec("ciphertext", ct64)
	if err != nil {
		return tokenAnswer{}, err
	}
	nonce, err := dec("nonce", nonce64)
	if err != nil {
		return tokenAnswer{}, err
	}
	sender, err := dec("sender_pubkey", sender64)
	if err != nil {
		return tokenAnswer{}, err
	}
	if len(nonce) != 24 || len(sender) != 32 {
		return tokenAnswer{}, fmt.Errorf("%w: sealed pair/complete: nonce %d bytes (want 24), sender key %d bytes (want 32)", ErrBadResponse, len(nonce), len(sender))
	}
	plain, err := opener.OpenBox(ct, nonce, sender)
	if err != nil {
		return tokenAnswer{}, fmt.Errorf("marketplace: opening sealed pairing answer: %w", err)
	}
	defer clear(plain)
	trimmed := bytes.TrimSpace(plain)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var ta tokenAnswer
		if err := json.Unmarshal(trimmed, &ta); err != nil {
			return tokenAnswer{}, fmt.Errorf("%w: sealed pair/complete plaintext is not valid JSON: %v", ErrBadResponse, err)
		}
		return ta, nil
	}
	return tokenAnswer{Token: string(trimmed)}, nil
}

// UserLogin signs a user in at the cws host (legacy) and returns the user
// JWT needed by RegisterPrinter. The password is sent once and not kept.
func (c *Client) UserLogin(ctx context.Context, email, password string) (string, error) {
	u := *c.cws
	u.Path = strings.TrimRight(u.Path, "/") + pathUserLogin
	req, err := c.newRequest(ctx, http.MethodPost, &u, map[string]string{"email": email, "password": password}, "")
	if err != nil {
		return "", err
	}
	var ans struct {
		Token string `json:"token"`
	}
	if err := c.do(req, &ans); err != nil {
		return "", err
	}
	if ans.Token == "" {
		return "", fmt.Errorf("%w: login answer lacks token", ErrBadResponse)
	}
	return ans.Token, nil
}

// Registration is the answer of a legacy registration.
type Registration struct {
	Token  Token
	UserID string
	KEKID  string
}

// RegisterPrinter registers the printer with a user JWT (legacy flow, also
// served by the current API) and stores the printer token.
func (c *Client) RegisterPrinter(ctx context.Context, userJWT string, pub []byte, info PrinterInfo) (Registration, error) {
	if err := checkPublicKey(pub); err != nil {
		return Registration{}, err
	}
	if userJWT == "" {
		return Registration{}, errors.New("marketplace: registration needs a user token (log in first)")
	}
	body := map[string]string{
		"printer_name":       info.Name,
		"manufacturer":       info.Manufacturer,
		"model":              info.Model,
		"printer_public_key": base64.StdEncoding.EncodeToString(pub),
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.endpoint(pathRegister, nil), body, userJWT)
	if err != nil {
		return Registration{}, err
	}
	var ans struct {
		ID           flexString      `json:"id"`
		PrinterToken string          `json:"printer_token"`
		TokenExpires json.RawMessage `json:"token_expires"`
		UserID       flexString      `json:"user_id"`
		KEKID        flexString      `json:"kek_id"`
	}
	if err := c.do(req, &ans); err != nil {
		return Registration{}, err
	}
	tok, err := newToken(ans.PrinterToken, string(ans.ID), c.answerExpiry("register-printer", ans.TokenExpires), c.clock.Now(), legacyDefaultTokenTT)
	if err != nil {
		return Registration{}, fmt.Errorf("register-printer: %w", err)
	}
	if err := c.SetToken(tok); err != nil {
		return Registration{}, err
	}
	return Registration{Token: tok, UserID: string(ans.UserID), KEKID: string(ans.KEKID)}, nil
}

// unknownExpiryLifetime is assumed for a freshly paired token when neither
// its JWT exp nor the answer's expiry can be read: the shortest lifetime a
// printer token sensibly has, so the refresher renews it at once (under 7
// days left) and learns the real expiry from the refreshed token.
const unknownExpiryLifetime = 24 * time.Hour

// answerExpiry reads the first expiry field of an answer that says
// anything. The token's JWT exp, when present, wins over it (newToken); an
// expiry in a form we cannot read is logged and treated as absent, never a
// reason to abort a pairing.
func (c *Client) answerExpiry(call string, fields ...json.RawMessage) time.Time {
	for _, raw := range fields {
		t, err := parseWireTime(raw)
		switch {
		case err == nil:
			return t
		case errors.Is(err, errNoTime):
			continue
		default:
			c.log.Warn("marketplace: "+call+" expiry not understood; using the token's own exp, else renewing early", "problem", err)
		}
	}
	return time.Time{}
}

package marketplace

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// Token is the printer's credential toward the marketplace.
type Token struct {
	Value     string    // the JWT; never log it
	PrinterID string    // from the claims (printer_id, printerId, sub), else the server's answer
	Expiry    time.Time // claim exp, else the server's expiry field
	// ObtainedAt is when the printer received the token (or the iat claim):
	// the start of the lifetime the 80 % rule measures.
	ObtainedAt time.Time
}

// String and LogValue keep the token itself out of logs.
func (t Token) String() string {
	return fmt.Sprintf("printer %s token (expires %s)", t.PrinterID, t.Expiry.UTC().Format(time.RFC3339))
}

// LogValue implements slog.LogValuer without the token value.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("printer_id", t.PrinterID), slog.Time("expires", t.Expiry))
}

// Errors about pairing state.
var (
	// ErrNotPaired: no printer token is stored.
	ErrNotPaired = errors.New("marketplace: printer is not paired")
	// ErrPairingLost: the marketplace rejected a token refresh with 401;
	// the printer must be paired again.
	ErrPairingLost = errors.New("marketplace: pairing lost (the marketplace rejected the token refresh); pair the printer again")
	// ErrBadToken: a token that is not a readable JWT.
	ErrBadToken = errors.New("marketplace: malformed printer token")
)

// Claims are the JWT claims the printer reads. The signature is NOT
// verified: the marketplace publishes no key, and the printer only needs
// the expiry and its own id.
type Claims struct {
	Expiry    time.Time // zero when absent
	IssuedAt  time.Time // zero when absent
	PrinterID string    // printer_id, else printerId, else sub
}

// ParseClaims decodes the JWT payload without verifying the signature.
func ParseClaims(jwt string) (Claims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("%w: %d dot-separated parts, want 3", ErrBadToken, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url: %v", ErrBadToken, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not a JSON object: %v", ErrBadToken, err)
	}
	var c Claims
	if c.Expiry, err = epochClaim(raw["exp"]); err != nil {
		return Claims{}, fmt.Errorf("%w: claim exp: %v", ErrBadToken, err)
	}
	if c.IssuedAt, err = epochClaim(raw["iat"]); err != nil {
		return Claims{}, fmt.Errorf("%w: claim iat: %v", ErrBadToken, err)
	}
	for _, k := range []string{"printer_id", "printerId", "sub"} {
		var id flexString
		if v, ok := raw[k]; ok && json.Unmarshal(v, &id) == nil && id != "" {
			c.PrinterID = string(id)
			break
		}
	}
	return c, nil
}

func epochClaim(v json.RawMessage) (time.Time, error) {
	if len(v) == 0 || string(v) == "null" {
		return time.Time{}, nil
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return time.Time{}, fmt.Errorf("not a number: %s", v)
	}
	return time.Unix(int64(f), 0).UTC(), nil
}

// parseExpiry reads a server expiry field in any form parseWireTime knows;
// absent, null and "" are the zero time.
func parseExpiry(v json.RawMessage) (time.Time, error) {
	t, err := parseWireTime(v)
	if errors.Is(err, errNoTime) {
		return time.Time{}, nil
	}
	return t, err
}

// flexString accepts a JSON string or number (ids are numbers on some
// marketplace builds).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string or number, got %s", b)
	}
	*f = flexString(n.String())
	return nil
}

// newToken builds a Token from a JWT and the server's answer. Claims win;
// the answer fills what they lack; defaultLifetime (0 ⇒ none) applies when
// neither says when the token expires.
func newToken(jwt string, answerID string, answerExpiry time.Time, now time.Time, defaultLifetime time.Duration) (Token, error) {
	if jwt == "" {
		return Token{}, fmt.Errorf("%w: empty token", ErrBadResponse)
	}
	claims, err := ParseClaims(jwt)
	if err != nil {
		return Token{}, err
	}
	t := Token{Value: jwt, PrinterID: claims.PrinterID, Expiry: claims.Expiry, ObtainedAt: now.UTC()}
	if t.PrinterID == "" {
		t.PrinterID = answerID
	}
	if t.Expiry.IsZero() {
		t.Expiry = answerExpiry
	}
	if t.Expiry.IsZero() && defaultLifetime > 0 {
		t.Expiry = now.Add(defaultLifetime).UTC()
	}
	if !claims.IssuedAt.IsZero() && claims.IssuedAt.Before(t.ObtainedAt) {
		t.ObtainedAt = claims.IssuedAt
	}
	if t.PrinterID == "" {
		return Token{}, fmt.Errorf("%w: no printer id in the token claims or the answer", ErrBadResponse)
	}
	if t.Expiry.IsZero() {
		return Token{}, fmt.Errorf("%w: no expiry in the token claims or the answer", ErrBadResponse)
	}
	return t, nil
}

// TokenStore keeps the printer token in the state directory: one JSON file,
// mode 0600, replaced atomically (temp file, fsync, rename, fsync dir).
type TokenStore struct{ dir string }

// Names of the files in the state directory.
const (
	TokenFileName        = "marketplace-token.json"
	PairingLostFileName  = "marketplace-pairing-lost.json"
	legacyDefaultTokenTT = 30 * 24 * time.Hour
)

// NewTokenStore stores tokens under dir.
func NewTokenStore(dir string) *TokenStore { return &TokenStore{dir: dir} }

type tokenFile struct {
	PrinterToken string    `json:"printer_token"`
	PrinterID    string    `json:"printer_id"`
	TokenExpires time.Time `json:"token_expires"`
	ObtainedAt   time.Time `json:"obtained_at"`
}

// Load reads the stored token; ErrNotPaired when there is none.
func (s *TokenStore) Load() (Token, error) {
	path := filepath.Join(s.dir, TokenFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Token{}, ErrNotPaired
	}
	if err != nil {
		return Token{}, fmt.Errorf("marketplace: reading token file: %w", err)
	}
	var f tokenFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Token{}, fmt.Errorf("marketplace: token file %s is corrupt: %v", path, err)
	}
	if f.PrinterToken == "" || f.PrinterID == "" || f.TokenExpires.IsZero() {
		return Token{}, fmt.Errorf("marketplace: token file %s lacks printer_token, printer_id or token_expires", path)
	}
	return Token{Value: f.PrinterToken, PrinterID: f.PrinterID, Expiry: f.TokenExpires, ObtainedAt: f.ObtainedAt}, nil
}

// Save replaces the stored token atomically and clears a pairing-lost mark.
func (s *TokenStore) Save(t Token) error {
	b, err := json.MarshalIndent(tokenFile{t.Value, t.PrinterID, t.Expiry.UTC(), t.ObtainedAt.UTC()}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, TokenFileName), append(b, '\n')); err != nil {
		return fmt.Errorf("marketplace: saving token: %w", err)
	}
	if err := os.Remove(filepath.Join(s.dir, PairingLostFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("marketplace: clearing pairing-lost mark: %w", err)
	}
	return nil
}

// MarkPairingLost records that the marketplace rejected the token; the
// token file stays for diagnosis.
func (s *TokenStore) MarkPairingLost(at time.Time, reason string) error {
	b, _ := json.Marshal(map[string]string{"lost_at": at.UTC().Format(time.RFC3339), "reason": reason})
	return writeFileAtomic(filepath.Join(s.dir, PairingLostFileName), append(b, '\n'))
}

// PairingLost reports whether a pairing-lost mark is present.
func (s *TokenStore) PairingLost() (bool, error) {
	_, err := os.Stat(filepath.Join(s.dir, PairingLostFileName))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// writeFileAtomic writes a token-store file, creating the state directory
// (0700) on first use.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data)
}

// RefreshDecision applies the spec's token policy at now: refresh when under
// 7 days remain or over 80 % of the lifetime has passed; otherwise check
// again in 24 h (under 10 days left) or 72 h.
func RefreshDecision(t Token, now time.Time) (refreshNow bool, checkAgainIn time.Duration) {
	remaining := t.Expiry.Sub(now)
	if remaining < 7*24*time.Hour {
		return true, 0
	}
	if !t.ObtainedAt.IsZero() {
		lifetime := t.Expiry.Sub(t.ObtainedAt)
		if lifetime > 0 && now.Sub(t.ObtainedAt)*5 > lifetime*4 {
			return true, 0
		}
	}
	if remaining < 10*24*time.Hour {
		return false, 24 * time.Hour
	}
	return false, 72 * time.Hour
}

package identity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LegacyTokenFile is the old plugin's printer token, below <printer_data>/lmnt_marketplace/.
const LegacyTokenFile = "tokens/printer_token.json"

// Token file formats.
const (
	TokenFormatCurrent = "current" // {"printer_token","token_expires","created_at","printer_name","printer_id"}
	TokenFormatLegacy  = "legacy"  // {"token","expiry"}
)

// LegacyToken is the printer token the old plugin stored. Token is a secret:
// String and LogValue leave it out.
type LegacyToken struct {
	Token       string
	ExpiresAt   time.Time // zero when the file gave none (use the JWT's exp)
	CreatedAt   time.Time // zero when absent; the plugin wrote naive local time
	PrinterName string
	PrinterID   string
	Format      string // TokenFormatCurrent or TokenFormatLegacy
}

// String describes the token without revealing it.
func (t LegacyToken) String() string {
	return fmt.Sprintf("printer token (%s format, printer %q, expires %s)", t.Format, t.PrinterID, t.ExpiresAt.Format(time.RFC3339))
}

// GoString keeps %#v from printing the token.
func (t LegacyToken) GoString() string { return "identity.LegacyToken{" + t.String() + "}" }

// LogValue logs everything but the token.
func (t LegacyToken) LogValue() slog.Value {
	return slog.GroupValue(slog.String("format", t.Format), slog.String("printer_id", t.PrinterID),
		slog.String("printer_name", t.PrinterName), slog.Time("expires_at", t.ExpiresAt))
}

// ImportLegacyToken reads tokens/printer_token.json from the plugin's data
// directory, in either format. Naive timestamps: created_at is local time (the
// plugin wrote datetime.now()); an expiry without a zone is taken as UTC, the
// marketplace's zone.
func ImportLegacyToken(dir string) (*LegacyToken, error) {
	path := filepath.Join(dir, filepath.FromSlash(LegacyTokenFile))
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: reading legacy token: %w", err)
	}
	defer clear(data)
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("identity: %s: %w: not a JSON object", path, ErrLegacyMalformed)
	}
	t := &LegacyToken{}
	tokenField, expiryField := "printer_token", "token_expires"
	t.Format = TokenFormatCurrent
	if _, ok := raw["printer_token"]; !ok {
		tokenField, expiryField = "token", "expiry"
		t.Format = TokenFormatLegacy
	}
	field := func(name string) error {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return nil
		}
		switch name {
		case tokenField, "printer_name":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("%s is not a string", name)
			}
			if name == tokenField {
				t.Token = s
			} else {
				t.PrinterName = s
			}
		case "printer_id":
			// Stored as whatever the server sent: string or number.
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				var n json.Number
				if err := json.Unmarshal(v, &n); err != nil {
					return fmt.Errorf("printer_id is neither a string nor a number")
				}
				s = n.String()
			}
			t.PrinterID = s
		case expiryField:
			ts, err := parseTokenTime(v, time.UTC)
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			t.ExpiresAt = ts
		case "created_at":
			ts, err := parseTokenTime(v, time.Local)
			if err != nil {
				return fmt.Errorf("created_at: %v", err)
			}
			t.CreatedAt = ts
		}
		return nil
	}
	for _, name := range []string{tokenField, expiryField, "created_at", "printer_name", "printer_id"} {
		if err := field(name); err != nil {
			return nil, fmt.Errorf("identity: %s: %w: %s", path, ErrLegacyMalformed, err)
		}
	}
	if strings.TrimSpace(t.Token) == "" {
		return nil, fmt.Errorf("identity: %s: %w: no %q", path, ErrLegacyMalformed, tokenField)
	}
	return t, nil
}

// parseTokenTime accepts ISO 8601 (with or without zone, Python's isoformat
// and the server's "Z") or epoch seconds; naive times are in loc.
func parseTokenTime(v json.RawMessage, loc *time.Location) (time.Time, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(v, &n); err != nil {
			return time.Time{}, fmt.Errorf("want an ISO 8601 string or epoch seconds")
		}
		secs, err := strconv.ParseFloat(n.String(), 64)
		if err != nil {
			return time.Time{}, err
		}
		return time.Unix(int64(secs), 0).UTC(), nil
	}
	if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return ts, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00"} {
		if ts, err := time.ParseInLocation(layout, s, loc); err == nil {
			return ts, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO 8601 time", s)
}

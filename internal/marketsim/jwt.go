package marketsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// The simulator signs its JWTs (HS256) so that it can tell its own tokens
// from forgeries; the printer never verifies them (the spec says it cannot).

type jwtClaims struct {
	Subject   string `json:"sub"`
	PrinterID string `json:"printer_id,omitempty"`
	UserID    string `json:"userId,omitempty"`
	Email     string `json:"email,omitempty"`
	Kind      string `json:"typ"` // "printer" or "user"
	IssuedAt  int64  `json:"iat"`
	Expiry    int64  `json:"exp"`
	ID        string `json:"jti"`
}

var errBadJWT = errors.New("invalid token")

func signJWT(secret []byte, c jwtClaims) string {
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(c)
	msg := head + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return msg + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verifyJWT checks the signature only; expiry and revocation are the
// caller's policy.
func verifyJWT(secret []byte, tok string) (jwtClaims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return jwtClaims{}, errBadJWT
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
		return jwtClaims{}, errBadJWT
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return jwtClaims{}, errBadJWT
	}
	var c jwtClaims
	if err := json.Unmarshal(body, &c); err != nil {
		return jwtClaims{}, errBadJWT
	}
	return c, nil
}

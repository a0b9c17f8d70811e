package marketsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// DownloadKind is where a job's download URL points.
type DownloadKind string

const (
	// DownloadGCS: a storage.googleapis.com signed URL. The printer must not
	// fetch it; it must use the marketplace's download proxy.
	DownloadGCS DownloadKind = "gcs"
	// DownloadStorage: a signed URL on the simulator's fake third-party
	// storage host (another loopback listener), fetched directly and
	// without the printer token.
	DownloadStorage DownloadKind = "storage"
	// DownloadMarketplace: a URL on the marketplace host itself (needs the
	// printer token).
	DownloadMarketplace DownloadKind = "marketplace"
	// DownloadNone: the poll carries no URL; get-print-job gives a
	// gcode_file_url on the marketplace host.
	DownloadNone DownloadKind = "none"
	// DownloadFirebase: a firebasestorage.googleapis.com URL, which the old
	// plugin also routed through the download proxy.
	DownloadFirebase DownloadKind = "firebase"
	// DownloadLMNTHost: a URL on a second LMNT host (not the API base)
	// that answers 401 without the printer token.
	DownloadLMNTHost DownloadKind = "lmnt-host"
)

func parseDownloadKind(s string) (DownloadKind, error) {
	switch k := DownloadKind(s); k {
	case DownloadGCS, DownloadStorage, DownloadMarketplace, DownloadNone, DownloadFirebase, DownloadLMNTHost:
		return k, nil
	case "":
		return DownloadGCS, nil
	}
	return "", fmt.Errorf("unknown download kind %q (gcs, firebase, storage, marketplace, lmnt-host, none)", s)
}

// JobOptions shape a created job.
type JobOptions struct {
	Download   DownloadKind // "" ⇒ DownloadGCS, as the real marketplace does
	PurchaseID string       // "" ⇒ generated
}

// JobInfo describes a created job (no key material).
type JobInfo struct {
	ID             string       `json:"print_job_id"`
	PrinterID      string       `json:"printer_id"`
	PurchaseID     string       `json:"purchase_id"`
	Download       DownloadKind `json:"download"`
	CiphertextSize int          `json:"ciphertext_size"`
}

// StatusPost is one job-status report as the simulator received it.
type StatusPost struct {
	Status        string    `json:"status"`
	Message       string    `json:"message,omitempty"`
	FilamentUsed  *float64  `json:"filament_used,omitempty"`
	PrintDuration *float64  `json:"print_duration,omitempty"`
	TotalDuration *float64  `json:"total_duration,omitempty"`
	Profile       string    `json:"profile"`
	At            time.Time `json:"at"`
}

// PairingInfo is a pairing session as the web shop shows it.
type PairingInfo struct {
	SessionID   string    `json:"session_id"`
	Code        string    `json:"pairing_code"`
	Status      string    `json:"status"`
	PrinterName string    `json:"printer_name"`
	KeyID       string    `json:"key_id"`
	ExpiresAt   time.Time `json:"expires_at"`
	PrinterID   string    `json:"printer_id,omitempty"`
}

// PrinterInfo is a registered printer.
type PrinterInfo struct {
	ID              string   `json:"id"`
	UserID          string   `json:"user_id"`
	Name            string   `json:"name"`
	Manufacturer    string   `json:"manufacturer"`
	Model           string   `json:"model"`
	PublicKey       string   `json:"public_key"` // standard Base64
	Profile         string   `json:"profile"`
	Queue           []string `json:"queue"`
	PushConnections int      `json:"push_connections"`
}

// AddUser creates a web-shop user (email and password for the legacy login).
func (s *Server) AddUser(email, password string) (string, error) {
	if email == "" || password == "" {
		return "", fmt.Errorf("marketsim: a user needs an email and a password")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.users[email]; ok {
		return u.id, fmt.Errorf("marketsim: user %s exists", email)
	}
	u := &user{id: s.newID("usr"), email: email, password: password}
	s.users[email] = u
	s.userOrder = append(s.userOrder, email)
	return u.id, nil
}

// ownerLocked is the user named by email, or the first user (created on
// demand) when email is empty.
func (s *Server) ownerLocked(email string) (*user, error) {
	if email != "" {
		u, ok := s.users[email]
		if !ok {
			return nil, fmt.Errorf("%w: user %s", ErrNotFound, email)
		}
		return u, nil
	}
	if len(s.userOrder) == 0 {
		u := &user{id: s.newID("usr"), email: "owner@example.com", password: "owner"}
		s.users[u.email] = u
		s.userOrder = append(s.userOrder, u.email)
	}
	return s.users[s.userOrder[0]], nil
}

// Pairings lists the pairing sessions.
func (s *Server) Pairings() []PairingInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []PairingInfo{}
	for _, ss := range s.sessions {
		s.expireLocked(ss)
		out = append(out, PairingInfo{ss.id, ss.code, ss.status, ss.name, ss.keyID, ss.expires, ss.printerID})
	}
	slices.SortFunc(out, func(a, b PairingInfo) int { return a.ExpiresAt.Compare(b.ExpiresAt) })
	return out
}

func (s *Server) expireLocked(ss *session) {
	if ss.status == "pending" && s.o.Now().After(ss.expires) {
		ss.status = "expired"
	}
}

// ApprovePairing approves the pending session with this code for the user
// (email "" ⇒ the first user), as the owner does in the web shop, and
// creates the printer. It returns the printer id.
func (s *Server) ApprovePairing(code, email string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		if ss.code != code {
			continue
		}
		s.expireLocked(ss)
		if ss.status != "pending" {
			return "", fmt.Errorf("marketsim: pairing %s is %s", code, ss.status)
		}
		return s.approveLocked(ss, email)
	}
	return "", fmt.Errorf("%w: pairing code %q", ErrNotFound, code)
}

func (s *Server) approveLocked(ss *session, email string) (string, error) {
	u, err := s.ownerLocked(email)
	if err != nil {
		return "", err
	}
	p := s.addPrinterLocked(u.id, ss.name, ss.mfr, ss.model, ss.extruders, ss.publicKey, "current")
	ss.status, ss.printerID = "approved", p.id
	return p.id, nil
}

func (s *Server) addPrinterLocked(userID, name, mfr, model string, extruders int, pub [32]byte, profile string) *printer {
	p := &printer{id: s.newID("prn"), userID: userID, name: name, manufacturer: mfr, model: model,
		extruders: extruders, publicKey: pub, profile: profile, watchers: map[chan struct{}]struct{}{}}
	s.printers[p.id] = p
	return p
}

// Printers lists the registered printers.
func (s *Server) Printers() []PrinterInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []PrinterInfo{}
	for _, p := range s.printers {
		out = append(out, PrinterInfo{p.id, p.userID, p.name, p.manufacturer, p.model,
			base64.StdEncoding.EncodeToString(p.publicKey[:]), p.profile, slices.Clone(p.queue), p.pushConnections})
	}
	slices.SortFunc(out, func(a, b PrinterInfo) int { return cmpString(a.ID, b.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PushKeepAlives is how many keep-alives the printer's push streams have
// carried (written and flushed; a closed stream takes no more).
func (s *Server) PushKeepAlives(printerID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.printers[printerID]; ok {
		return p.pushKeepAlives
	}
	return 0
}

// PushConnections is how many push streams the printer has opened.
func (s *Server) PushConnections(printerID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.printers[printerID]; ok {
		return p.pushConnections
	}
	return 0
}

// CreateJob encrypts gcode for the printer's registered key, exactly as the
// marketplace does, and queues it.
func (s *Server) CreateJob(printerID string, gcode []byte, o JobOptions) (JobInfo, error) {
	kind, err := parseDownloadKind(string(o.Download))
	if err != nil {
		return JobInfo{}, err
	}
	if len(gcode) == 0 {
		return JobInfo{}, fmt.Errorf("marketsim: empty G-code")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.printers[printerID]
	if !ok {
		return JobInfo{}, fmt.Errorf("%w: printer %q", ErrNotFound, printerID)
	}
	enc, err := encryptJob(s.o.Rand, &p.publicKey, gcode)
	if err != nil {
		return JobInfo{}, err
	}
	j := &job{id: s.newID("job"), purchaseID: o.PurchaseID, printerID: p.id, status: "ready_to_print",
		created: s.o.Now().UTC(), download: kind, enc: enc}
	if j.purchaseID == "" {
		j.purchaseID = s.newID("pur")
	}
	j.storageSig = s.sign("storage:" + j.id)
	s.jobs[j.id] = j
	p.queue = append(p.queue, j.id)
	s.notifyLocked(p)
	return JobInfo{j.id, p.id, j.purchaseID, kind, len(enc.ciphertext)}, nil
}

// StatusHistory is every status report received for the job, in order.
func (s *Server) StatusHistory(jobID string) []StatusPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[jobID]; ok {
		return slices.Clone(j.history)
	}
	return nil
}

// ExpireTokens makes every token issued so far to the printer count as
// expired: refused with 401 by every call but refresh.
func (s *Server) ExpireTokens(printerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if t.printerID == printerID {
			t.expired = true
		}
	}
}

// RevokeTokens makes the marketplace forget the printer's tokens: even a
// refresh is refused with 401 (the printer has lost its pairing).
func (s *Server) RevokeTokens(printerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if t.printerID == printerID {
			t.revoked = true
		}
	}
}

// StorageAuthorizations lists the Authorization headers the fake storage
// host and the push host received (there must be none).
func (s *Server) StorageAuthorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.storageAuth), s.pushAuth...)
}

// notifyLocked wakes the printer's push streams.
func (s *Server) notifyLocked(p *printer) {
	for ch := range p.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Server) issuePrinterTokenLocked(p *printer) (string, time.Time) {
	now := s.o.Now()
	exp := now.Add(s.o.TokenLifetime).Truncate(time.Second)
	jti := s.newID("tok")
	s.tokens[jti] = &tokenState{printerID: p.id}
	return signJWT(s.secret, jwtClaims{Subject: p.id, PrinterID: p.id, Kind: "printer", IssuedAt: now.Unix(), Expiry: exp.Unix(), ID: jti}), exp.UTC()
}

func (s *Server) issueUserToken(u *user) string {
	now := s.o.Now()
	return signJWT(s.secret, jwtClaims{Subject: u.id, UserID: u.id, Email: u.email, Kind: "user",
		IssuedAt: now.Unix(), Expiry: now.Add(time.Hour).Unix(), ID: s.newID("utok")})
}

func (s *Server) sign(msg string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// downloadURLLocked is the job's URL as the poll shows it.
func (s *Server) downloadURLLocked(j *job) string {
	switch j.download {
	case DownloadGCS:
		return "https://storage.googleapis.com/lmnt-sim-jobs/" + j.id + ".gcode.enc?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=" + j.storageSig
	case DownloadStorage:
		return s.storage.url + "/jobs/" + j.id + ".gcode.enc?" + url.Values{"sig": {j.storageSig}}.Encode()
	case DownloadMarketplace:
		return s.api.url + "/api/sim/files/" + url.PathEscape(j.id)
	case DownloadFirebase:
		return "https://firebasestorage.googleapis.com/v0/b/lmnt-sim.appspot.com/o/jobs%2F" + j.id + ".gcode.enc?alt=media&token=" + j.storageSig
	case DownloadLMNTHost:
		return s.lmnt2.url + "/files/" + url.PathEscape(j.id) + ".gcode.enc"
	}
	return ""
}

// wireJobLocked is the job as the poll answer carries it: the fields the
// old plugin reads from the real poll, in both eras. The DEK package is
// gcode_dek_encrypted_hex in both profiles (the old plugin of the seed era
// read that name too; gcode_dek_package is only the seed README's word),
// unless AltDEKField asks for the alternative. Varying shapes the optional
// fields the way another build of the server would (variant).
func (s *Server) wireJobLocked(j *job, variant int) map[string]any {
	m := map[string]any{
		"print_job_id":                 j.id,
		"purchase_id":                  j.purchaseID,
		"status":                       j.status,
		"created_at":                   j.created.Format("2006-01-02T15:04:05.000Z"),
		"encrypted_gcode_download_url": s.downloadURLLocked(j),
		"gcode_iv_hex":                 j.enc.ivHex,
		"user_account_id":              s.printers[j.printerID].userID,
		"printer_kek_id":               "kek-" + j.printerID,
	}
	dekField := "gcode_dek_encrypted_hex"
	if s.o.AltDEKField {
		dekField = "gcode_dek_package"
	}
	m[dekField] = j.enc.dekPackage
	if s.o.Varying {
		varyJob(m, j, variant)
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

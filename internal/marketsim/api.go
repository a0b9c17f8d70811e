package marketsim

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobstatus"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(mustJSON(v), '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// call wraps a handler with the call's counter and faults.
func (s *Server) call(c Call, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer s.enter(c)()
		sw := &statusRecorder{ResponseWriter: w}
		w = sw
		entry := s.logRequest(c, s.printerOf(bearer(r)))
		defer func() { s.logStatus(entry, sw.status) }()
		if f, ok := s.takeFault(c); ok {
			if s.applyFault(w, r, f) {
				return
			}
			r = r.WithContext(withFault(r.Context(), f))
		}
		h(w, r)
	}
}

func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	// Pairing (current) and registration (both).
	mux.HandleFunc("POST /api/printers/pair/start", s.call(CallPairStart, s.handlePairStart))
	mux.HandleFunc("POST /api/printers/pair/status", s.call(CallPairStatus, s.handlePairStatus))
	mux.HandleFunc("POST /api/printers/pair/complete", s.call(CallPairComplete, s.handlePairComplete))
	mux.HandleFunc("POST /api/register-printer", s.call(CallRegister, s.handleRegister))
	mux.HandleFunc("POST /auth/login", s.call(CallLogin, s.handleLogin)) // cws host of the legacy era
	// Current profile.
	if !s.o.LegacyOnly {
		mux.HandleFunc("POST /api/printer-agent/refresh-token", s.call(CallRefresh, s.handleRefresh("current")))
		mux.HandleFunc("GET /api/printer-agent/poll-print-queue", s.call(CallPoll, s.handlePoll()))
		mux.HandleFunc("GET /api/printer-agent/download-gcode", s.call(CallDownload, s.handleDownloadProxy))
		mux.HandleFunc("POST /api/printer-agent/1.0.0/job-status/{id}", s.call(CallJobStatus, s.handleJobStatus("current")))
	}
	// Legacy profile.
	mux.HandleFunc("POST /api/refresh-printer-token", s.call(CallRefresh, s.handleRefresh("legacy")))
	mux.HandleFunc("GET /api/poll-print-queue", s.call(CallPoll, s.handlePoll()))
	mux.HandleFunc("GET /api/print/download-gcode", s.call(CallDownload, s.handleDownloadProxy))
	mux.HandleFunc("POST /api/1.0.0/job-status/{id}", s.call(CallJobStatus, s.handleJobStatus("legacy")))
	// Both.
	mux.HandleFunc("GET /api/get-print-job", s.call(CallJobDetails, s.handleJobDetails))
	mux.HandleFunc("GET /api/sim/files/{id}", s.call(CallDownload, s.handleMarketplaceFile))
	return mux
}

// decodeBody reads a JSON request body (≤ 1 MiB), answering 400 itself.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func decodeKey(b64 string) ([32]byte, error) {
	var k [32]byte
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return k, errors.New("public key is not standard Base64")
	}
	if len(raw) != 32 {
		return k, fmt.Errorf("public key is %d bytes, want 32", len(raw))
	}
	copy(k[:], raw)
	return k, nil
}

func (s *Server) handlePairStart(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PublicKey string `json:"public_key"`
		KeyType   string `json:"key_type"`
		KeyID     string `json:"key_id"`
		Printer   struct {
			Name          string `json:"name"`
			Manufacturer  string `json:"manufacturer"`
			Model         string `json:"model"`
			ExtruderCount int    `json:"extruder_count"`
		} `json:"printer"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	pub, err := decodeKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sum := sha256.Sum256(pub[:])
	switch {
	case req.KeyType != "x25519":
		writeError(w, http.StatusBadRequest, "key_type must be x25519")
		return
	case req.KeyID != hex.EncodeToString(sum[:]):
		writeError(w, http.StatusBadRequest, "key_id is not the SHA-256 of the public key")
		return
	case req.Printer.Name == "":
		writeError(w, http.StatusBadRequest, "printer.name is required")
		return
	case req.Printer.ExtruderCount < 1 || req.Printer.ExtruderCount > 4:
		writeError(w, http.StatusBadRequest, "printer.extruder_count must be 1..4")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := &session{id: s.newID("pair"), code: s.pairingCodeLocked(), publicKey: pub, keyID: req.KeyID,
		name: req.Printer.Name, mfr: req.Printer.Manufacturer, model: req.Printer.Model,
		extruders: req.Printer.ExtruderCount, status: "pending", expires: s.o.Now().Add(10 * time.Minute).UTC()}
	s.sessions[ss.id] = ss
	if s.o.AutoApprove {
		if _, err := s.approveLocked(ss, ""); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"session_id": ss.id, "pairing_code": ss.code, "expires_at": s.expiryShape(ss.expires, false)})
}

// pairingCodeLocked makes a unique code from an alphabet without look-alikes.
func (s *Server) pairingCodeLocked() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	for {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		code := string(b)
		if !slices.ContainsFunc(mapValues(s.sessions), func(ss *session) bool { return ss.code == code }) {
			return code
		}
	}
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (s *Server) sessionFromBody(w http.ResponseWriter, r *http.Request) (*session, bool) {
	var req struct {
		SessionID string `json:"session_id"`
	}
	if !decodeBody(w, r, &req) {
		return nil, false
	}
	ss, ok := s.sessions[req.SessionID]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown session_id")
		return nil, false
	}
	s.expireLocked(ss)
	return ss, true
}

func (s *Server) handlePairStatus(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.sessionFromBody(w, r); ok {
		writeJSON(w, http.StatusOK, map[string]string{"status": ss.status})
	}
}

func (s *Server) handlePairComplete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessionFromBody(w, r)
	if !ok {
		return
	}
	if ss.status != "approved" {
		writeError(w, http.StatusConflict, "pairing is "+ss.status+", not approved")
		return
	}
	p := s.printers[ss.printerID]
	tok, exp := s.issuePrinterTokenLocked(p)
	plain := map[string]any{"token": tok, "expires_at": s.expiryShape(exp, true), "printer_id": p.id}
	if !s.o.SealPairing {
		writeJSON(w, http.StatusOK, plain)
		return
	}
	var eph [32]byte
	var nonce [24]byte
	if _, err := io.ReadFull(s.o.Rand, eph[:]); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if _, err := io.ReadFull(s.o.Rand, nonce[:]); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	pkg, err := dekPackage(&ss.publicKey, &eph, &nonce, mustJSON(plain))
	clear(eph[:])
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The package format is B64(sender):B64(nonce):B64(box); the sealed
	// answer carries the same three values as named fields.
	parts := strings.Split(pkg, ":")
	writeJSON(w, http.StatusOK, map[string]string{"sender_pubkey": parts[0], "nonce": parts[1], "ciphertext": parts[2]})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[req.Email]
	if !ok || u.password != req.Password {
		writeError(w, http.StatusUnauthorized, "invalid email or password")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": s.issueUserToken(u), "user": map[string]string{"id": u.id, "email": u.email}})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	claims, err := verifyJWT(s.secret, bearer(r))
	if err != nil || claims.Kind != "user" || s.o.Now().Unix() >= claims.Expiry {
		writeError(w, http.StatusUnauthorized, "a valid user token is required")
		return
	}
	var req struct {
		PrinterName  string `json:"printer_name"`
		Manufacturer string `json:"manufacturer"`
		Model        string `json:"model"`
		PublicKey    string `json:"printer_public_key"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	pub, err := decodeKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "printer_public_key: "+err.Error())
		return
	}
	if req.PrinterName == "" {
		writeError(w, http.StatusBadRequest, "printer_name is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.addPrinterLocked(claims.Subject, req.PrinterName, req.Manufacturer, req.Model, 1, pub, "legacy")
	tok, exp := s.issuePrinterTokenLocked(p)
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": p.id, "printer_token": tok, "token_expires": exp.Format("2006-01-02T15:04:05.000Z"),
		"user_id": p.userID, "kek_id": "kek-" + p.id, "printer_name": p.name,
	})
}

// authPrinter checks the printer JWT. forRefresh accepts expired tokens
// (the point of refreshing) but not revoked ones.
func (s *Server) authPrinterLocked(w http.ResponseWriter, r *http.Request, forRefresh bool) (*printer, bool) {
	claims, err := verifyJWT(s.secret, bearer(r))
	if err != nil || claims.Kind != "printer" {
		writeError(w, http.StatusUnauthorized, "a valid printer token is required")
		return nil, false
	}
	st, ok := s.tokens[claims.ID]
	p := s.printers[claims.PrinterID]
	switch {
	case !ok || p == nil || st.revoked:
		writeError(w, http.StatusUnauthorized, "printer token revoked")
		return nil, false
	case !forRefresh && (st.expired || s.o.Now().Unix() >= claims.Expiry):
		writeError(w, http.StatusUnauthorized, "printer token expired")
		return nil, false
	}
	return p, true
}

func (s *Server) handleRefresh(profile string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		p, ok := s.authPrinterLocked(w, r, true)
		if !ok {
			return
		}
		tok, exp := s.issuePrinterTokenLocked(p)
		if profile == "legacy" {
			// The legacy server's alternative field names (the printer
			// accepts both spellings).
			writeJSON(w, http.StatusOK, map[string]string{"token": tok, "expiry": exp.Format(time.RFC3339)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"printer_token": tok, "token_expires": exp.Format(time.RFC3339)})
	}
}

func (s *Server) handlePoll() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		p, ok := s.authPrinterLocked(w, r, false)
		if !ok {
			return
		}
		s.polls++
		jobs := []any{}
		for i, id := range p.queue {
			jobs = append(jobs, s.wireJobLocked(s.jobs[id], s.polls+i))
		}
		if s.o.Varying {
			jobs = withOddEntries(jobs, s.polls)
		}
		writeJSON(w, http.StatusOK, map[string]any{"jobs": jobs})
	}
}

// printerJobLocked is the job named by the print_job_id query, owned by p.
func (s *Server) printerJobLocked(w http.ResponseWriter, p *printer, id string) (*job, bool) {
	j, ok := s.jobs[id]
	if !ok || j.printerID != p.id {
		writeError(w, http.StatusNotFound, "no such print job for this printer")
		return nil, false
	}
	return j, true
}

func (s *Server) handleJobDetails(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.authPrinterLocked(w, r, false)
	if !ok {
		return
	}
	j, ok := s.printerJobLocked(w, p, r.URL.Query().Get("print_job_id"))
	if !ok {
		return
	}
	u := s.downloadURLLocked(j)
	if u == "" {
		u = s.api.url + "/api/sim/files/" + j.id
	}
	writeJSON(w, http.StatusOK, map[string]any{"print_job_id": j.id, "status": j.status, "gcode_file_url": u})
}

func (s *Server) handleDownloadProxy(w http.ResponseWriter, r *http.Request) {
	s.serveCiphertext(w, r, r.URL.Query().Get("print_job_id"))
}

func (s *Server) handleMarketplaceFile(w http.ResponseWriter, r *http.Request) {
	s.serveCiphertext(w, r, r.PathValue("id"))
}

func (s *Server) serveCiphertext(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	p, ok := s.authPrinterLocked(w, r, false)
	if !ok {
		s.mu.Unlock()
		return
	}
	j, ok := s.printerJobLocked(w, p, id)
	s.mu.Unlock()
	if ok {
		serveBody(w, r, j.enc.ciphertext)
	}
}

// serveBody answers data with its Content-Length, honouring a TruncateAt
// fault by cutting the connection mid-body.
func serveBody(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	f, _ := faultFrom(r.Context())
	if f.TruncateAt > 0 && f.TruncateAt < int64(len(data)) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:f.TruncateAt])
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // cut the connection: the body is short
	}
	if f.TrickleEvery > 0 {
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := range data {
			if _, err := w.Write(data[i : i+1]); err != nil || rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(f.TrickleEvery):
			}
		}
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

func (s *Server) handleJobStatus(profile string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Status        string   `json:"status"`
			Message       string   `json:"message"`
			FilamentUsed  *float64 `json:"filament_used"`
			PrintDuration *float64 `json:"print_duration"`
			TotalDuration *float64 `json:"total_duration"`
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		p, ok := s.authPrinterLocked(w, r, false)
		if !ok {
			return
		}
		j, ok := s.printerJobLocked(w, p, r.PathValue("id"))
		if !ok || !decodeBody(w, r, &req) {
			return
		}
		if !slices.Contains(jobstatus.All(), req.Status) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("status %q is not one of %v", req.Status, jobstatus.All()))
			return
		}
		j.history = append(j.history, StatusPost{Status: req.Status, Message: req.Message, FilamentUsed: req.FilamentUsed,
			PrintDuration: req.PrintDuration, TotalDuration: req.TotalDuration, Profile: profile, At: s.o.Now().UTC()})
		j.status = req.Status
		if jobstatus.Final(req.Status) {
			// A finished job leaves the queue.
			p.queue = slices.DeleteFunc(p.queue, func(id string) bool { return id == j.id })
			s.notifyLocked(p)
		}
		writeJSON(w, http.StatusOK, map[string]string{"message": "status updated"})
	}
}

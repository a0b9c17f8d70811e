package api

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
)

const (
	pluginPrefix = "/machine/lmnt_marketplace"
	v1Prefix     = "/lmnt/v1"
)

func (s *Server) buildRoutes() map[string]map[string]http.HandlerFunc {
	get, post := http.MethodGet, http.MethodPost
	startPairing := s.limited(s.handlePairStart)
	startPrint := s.handleStartPrint
	return map[string]map[string]http.HandlerFunc{
		// The original plugin's endpoints.
		pluginPrefix + "/status":               {get: s.handlePluginStatus},
		pluginPrefix + "/check_jobs":           {post: s.handleCheckJobs, get: s.handleCheckJobs},
		pluginPrefix + "/refresh_token":        {post: s.handleRefresh},
		pluginPrefix + "/register_printer":     {post: s.limited(s.handleRegister)},
		pluginPrefix + "/user_login":           {post: s.limited(s.handleLogin)},
		pluginPrefix + "/start_pairing":        {post: startPairing},
		pluginPrefix + "/pair/start":           {post: startPairing},
		pluginPrefix + "/pair/status":          {get: s.handlePairStatus, post: s.handlePairStatus},
		pluginPrefix + "/pair/complete":        {post: s.handlePairComplete},
		pluginPrefix + "/ready":                {post: s.handleReady},
		pluginPrefix + "/ui":                   {get: s.handleUI},
		pluginPrefix + "/ui/state":             {get: s.handleUIState},
		pluginPrefix + "/ui/thumbnail":         {get: s.handleUIThumbnail},
		"/machine/encrypted_print/start_print": {post: startPrint},
		"/server/encrypted/print":              {post: startPrint},
		// What the lmnt CLI uses.
		v1Prefix + "/status":             {get: s.handleStatus},
		v1Prefix + "/jobs":               {get: s.handleJobs},
		v1Prefix + "/jobs/cancel":        {post: s.handleCancel},
		v1Prefix + "/ready":              {post: s.handleReady},
		v1Prefix + "/keys":               {get: s.handleKeys},
		v1Prefix + "/keys/import-legacy": {post: s.handleImportLegacy},
		v1Prefix + "/keys/reseal":        {post: s.handleReseal},
		v1Prefix + "/doctor":             {get: s.handleDoctor},
		v1Prefix + "/restart":            {post: s.handleRestart},
		"/metrics":                       {get: s.handleMetrics},
	}
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.o.Metrics == nil {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "no endpoint %s", r.URL.Path))
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.o.Metrics(w)
}

func (s *Server) backend() Backend { return s.o.Backend }

// handlePluginStatus answers in the original plugin's shape (auth, jobs,
// version) and adds lmntd's fields alongside.
func (s *Server) handlePluginStatus(w http.ResponseWriter, r *http.Request) {
	st := s.backend().Status(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{
		"auth":    st.Auth,
		"jobs":    jobStatus(st),
		"version": st.Version,
		"printer": st.Printer,
		"klipper": st.Klipper,
		"key":     st.Key,
		"summary": st.Summary,
		"health":  st.Health,
	})
}

func jobStatus(st apitype.Status) apitype.JobStatus {
	js := apitype.JobStatus{CurrentJob: st.Jobs.Active, QueueLength: len(st.Jobs.Queue), LastCheck: st.LastPoll, Waiting: st.Jobs.Waiting}
	js.JobStarted = st.Jobs.Active != nil
	return js
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backend().Status(r.Context()))
}

func (s *Server) handleCheckJobs(w http.ResponseWriter, r *http.Request) {
	js, err := s.backend().CheckJobs(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "message": "Job status retrieved", "job_status": js})
}

func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	res, err := s.backend().RefreshToken(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "printer_id": res.PrinterID, "expiry": res.Expiry})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	email := req.Username
	if email == "" {
		email = req.Email
	}
	if email == "" || req.Password == "" {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "username and password are required"))
		return
	}
	res, err := s.backend().UserLogin(r.Context(), email, req.Password)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req apitype.RegisterRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	req.PrinterName, req.Manufacturer, req.Model = cleanName(req.PrinterName), cleanName(req.Manufacturer), cleanName(req.Model)
	if req.UserToken == "" || req.PrinterName == "" {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "user_token and printer_name are required (get user_token from user_login)"))
		return
	}
	res, err := s.backend().RegisterPrinter(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handlePairStart(w http.ResponseWriter, r *http.Request) {
	var req apitype.PairRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	req.PrinterName, req.Manufacturer, req.Model = cleanName(req.PrinterName), cleanName(req.Manufacturer), cleanName(req.Model)
	if req.ExtruderCount < 0 || req.ExtruderCount > 4 {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "extruder_count must be 1 to 4"))
		return
	}
	p, err := s.backend().StartPairing(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handlePairStatus(w http.ResponseWriter, r *http.Request) {
	p, err := s.backend().PairingStatus(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handlePairComplete(w http.ResponseWriter, r *http.Request) {
	p, err := s.backend().CompletePairing(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := s.backend().ConfirmBedClear(); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "bed_clear": true})
}

func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backend().Jobs())
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.ID == "" {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "id is required"))
		return
	}
	if err := s.backend().CancelJob(req.ID, textsafe.Clean(req.Reason, 200)); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "id": req.ID})
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backend().Keys())
}

func (s *Server) handleImportLegacy(w http.ResponseWriter, r *http.Request) {
	var req apitype.ImportLegacyRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.backend().ImportLegacyKey(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleReseal(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To string `json:"to"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.To != "tpm" && req.To != "software" {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "to must be tpm or software, not %q", req.To))
		return
	}
	res, err := s.backend().Reseal(r.Context(), req.To)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleDoctor(w http.ResponseWriter, r *http.Request) {
	offline := false
	switch v := r.URL.Query().Get("offline"); v {
	case "", "0", "false":
	case "1", "true":
		offline = true
	default:
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", "offline must be 1 or 0, not %q", v))
		return
	}
	writeJSON(w, http.StatusOK, s.backend().Doctor(r.Context(), offline))
}

func (s *Server) handleRestart(w http.ResponseWriter, r *http.Request) {
	var req struct {
		WhenIdle bool `json:"when_idle"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !req.WhenIdle {
		writeError(w, Errorf(http.StatusBadRequest, "bad_request", `only {"when_idle": true} is supported: lmntd never restarts under a running job (use systemctl restart lmntd to force)`))
		return
	}
	writeJSON(w, http.StatusAccepted, s.backend().RestartWhenIdle())
}

// cleanName cleans a name a caller gives (printer, file) before anything
// stores or shows it.
func cleanName(s string) string { return textsafe.Clean(s, 100) }

// Upload limits for the small fields of a start-print request.
const maxFieldLen = 4 << 10

// handleStartPrint takes a local encrypted (or plain) G-code upload, as
// multipart/form-data (part "file", fields fernet_key, dek_package or
// gcode_dek_package, iv or gcode_iv_hex, filename) or as a raw body
// (headers X-Fernet-Key, X-Dek-Package, X-Iv; ?filename=). The upload is
// held in an anonymous memory file until the job starts; it never touches
// the disk.
func (s *Server) handleStartPrint(w http.ResponseWriter, r *http.Request) {
	limit := s.o.MaxUpload()
	if r.ContentLength > limit {
		writeError(w, Errorf(http.StatusRequestEntityTooLarge, "too_large", "file of %d bytes is over the %d-byte limit (limits.max_download_size, or what is left of limits.max_local_queue_size)", r.ContentLength, limit))
		return
	}
	up, err := readUpload(r, limit)
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := s.backend().SubmitLocal(r.Context(), up.print())
	if err != nil {
		up.file.Close()
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "queued", "job_id": id, "filename": up.name, "size": up.size,
		"message": "Queued: the print starts when Klipper is ready and the bed is confirmed clear"})
}

type upload struct {
	file            *os.File
	size            int64
	name            string
	fernet, dek, iv string
}

func (u *upload) print() LocalPrint {
	f, size := u.file, u.size
	return LocalPrint{
		Name: u.name, Size: size, FernetKey: u.fernet, DEKPackage: u.dek, IVHex: u.iv,
		Body: func() (io.ReadCloser, error) {
			return struct {
				io.Reader
				io.Closer
			}{io.NewSectionReader(f, 0, size), f}, nil
		},
	}
}

func readUpload(r *http.Request, limit int64) (*upload, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil && r.Header.Get("Content-Type") != "" {
		return nil, Errorf(http.StatusBadRequest, "bad_request", "unreadable Content-Type: %v", err)
	}
	u := &upload{name: r.URL.Query().Get("filename")}
	switch {
	case mt == "multipart/form-data":
		if params["boundary"] == "" {
			return nil, Errorf(http.StatusBadRequest, "bad_request", "multipart body without boundary")
		}
		mr, err := r.MultipartReader()
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, "bad_request", "unreadable multipart body: %v", err)
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				u.close()
				return nil, Errorf(http.StatusBadRequest, "bad_request", "unreadable multipart body: %v", err)
			}
			field := part.FormName()
			if field == "file" {
				if u.file != nil {
					u.close()
					return nil, Errorf(http.StatusBadRequest, "bad_request", "more than one file part")
				}
				if u.name == "" {
					u.name = part.FileName()
				}
				if err := u.store(part, limit); err != nil {
					u.close()
					return nil, err
				}
				continue
			}
			val, err := io.ReadAll(io.LimitReader(part, maxFieldLen+1))
			if err != nil || len(val) > maxFieldLen {
				u.close()
				return nil, Errorf(http.StatusBadRequest, "bad_request", "field %q is unreadable or over %d bytes", field, maxFieldLen)
			}
			if err := u.setField(field, strings.TrimSpace(string(val))); err != nil {
				u.close()
				return nil, err
			}
		}
	case mt == "" || mt == "application/octet-stream" || mt == "text/plain" || mt == "text/x-gcode":
		for _, h := range []struct{ header, field string }{{"X-Fernet-Key", "fernet_key"}, {"X-Dek-Package", "dek_package"}, {"X-Iv", "iv"}} {
			if v := r.Header.Get(h.header); v != "" {
				if err := u.setField(h.field, strings.TrimSpace(v)); err != nil {
					return nil, err
				}
			}
		}
		if err := u.store(r.Body, limit); err != nil {
			u.close()
			return nil, err
		}
	default:
		return nil, Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send multipart/form-data or application/octet-stream, not %s", mt)
	}
	if u.file == nil {
		return nil, Errorf(http.StatusBadRequest, "bad_request", `no file: send it as the multipart part "file" or as the raw body`)
	}
	if u.size == 0 {
		u.close()
		return nil, Errorf(http.StatusBadRequest, "bad_request", "the file is empty")
	}
	switch {
	case u.fernet != "" && (u.dek != "" || u.iv != ""):
		u.close()
		return nil, Errorf(http.StatusBadRequest, "bad_request", "give either fernet_key or dek_package (+ iv), not both")
	case u.iv != "" && u.dek == "":
		u.close()
		return nil, Errorf(http.StatusBadRequest, "bad_request", "iv without dek_package")
	}
	if u.name = cleanName(u.name); u.name == "" {
		u.name = "upload.gcode"
	}
	return u, nil
}

func (u *upload) setField(name, val string) error {
	switch name {
	case "fernet_key":
		u.fernet = val
	case "dek_package", "gcode_dek_package":
		u.dek = val
	case "iv", "gcode_iv_hex":
		u.iv = val
	case "filename", "name":
		u.name = val
	default:
		return Errorf(http.StatusBadRequest, "bad_request", "unknown field %q (want file, fernet_key, dek_package, iv, filename)", name)
	}
	return nil
}

// store copies src into an anonymous memory file, at most limit bytes.
func (u *upload) store(src io.Reader, limit int64) error {
	fd, err := unix.MemfdCreate("lmnt-upload", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("holding the upload in memory: %w", err)
	}
	u.file = os.NewFile(uintptr(fd), "lmnt-upload")
	n, err := io.Copy(u.file, io.LimitReader(src, limit+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, "bad_request", "reading the upload: %v", err)
	}
	if n > limit {
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "file is over the %d-byte limit (limits.max_download_size, or what is left of limits.max_local_queue_size)", limit)
	}
	u.size = n
	return nil
}

func (u *upload) close() {
	if u.file != nil {
		u.file.Close()
		u.file = nil
	}
}

package marketsim

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxJobSize bounds a G-code upload through the admin API.
const maxJobSize = 512 << 20

// adminHandler is the plain-http loopback API that drives the simulator the
// way the web shop and the marketplace's back office would.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"api_url": s.URL(), "storage_url": s.StorageURL(), "push_url": s.PushURL(),
			"printers": s.Printers(), "pairings": s.Pairings(),
		})
	})
	mux.HandleFunc("POST /admin/users", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Email, Password string }
		if !decodeBody(w, r, &req) {
			return
		}
		id, err := s.AddUser(req.Email, req.Password)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"id": id, "email": req.Email})
	})
	mux.HandleFunc("POST /admin/pairings/approve", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Code, Email string }
		if !decodeBody(w, r, &req) {
			return
		}
		id, err := s.ApprovePairing(req.Code, req.Email)
		if err != nil {
			writeError(w, statusFor(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"printer_id": id})
	})
	mux.HandleFunc("POST /admin/jobs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		printerID := q.Get("printer_id")
		if printerID == "" {
			ps := s.Printers()
			if len(ps) != 1 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("printer_id is required (%d printers registered)", len(ps)))
				return
			}
			printerID = ps[0].ID
		}
		gcode, err := io.ReadAll(io.LimitReader(r.Body, maxJobSize+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading G-code: "+err.Error())
			return
		}
		if len(gcode) > maxJobSize {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("G-code larger than %d bytes", maxJobSize))
			return
		}
		info, err := s.CreateJob(printerID, gcode, JobOptions{Download: DownloadKind(q.Get("download")), PurchaseID: q.Get("purchase_id")})
		if err != nil {
			writeError(w, statusFor(err), err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, info)
	})
	mux.HandleFunc("GET /admin/jobs/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		h := s.StatusHistory(r.PathValue("id"))
		if h == nil {
			h = []StatusPost{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"print_job_id": r.PathValue("id"), "history": h})
	})
	mux.HandleFunc("PUT /admin/faults/{call}", func(w http.ResponseWriter, r *http.Request) {
		call, err := parseCall(r.PathValue("call"))
		if err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		var req adminFault
		if !decodeBody(w, r, &req) {
			return
		}
		f, err := req.fault()
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetFault(call, f)
		writeJSON(w, http.StatusOK, map[string]string{"call": string(call)})
	})
	mux.HandleFunc("GET /admin/requests", s.handleRequests)
	mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/printers/{id}/expire-tokens", func(w http.ResponseWriter, r *http.Request) {
		s.ExpireTokens(r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/printers/{id}/revoke-tokens", func(w http.ResponseWriter, r *http.Request) {
		s.RevokeTokens(r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// adminFault is Fault as JSON, with the latency as a Go duration string.
type adminFault struct {
	Status     int    `json:"status"`
	Latency    string `json:"latency"`
	TruncateAt int64  `json:"truncate_at"`
	Silent     bool   `json:"silent"`
	Drop       bool   `json:"drop"`
	Count      int    `json:"count"`
}

func (a adminFault) fault() (Fault, error) {
	f := Fault{Status: a.Status, TruncateAt: a.TruncateAt, Silent: a.Silent, Drop: a.Drop, Count: a.Count}
	if a.Status != 0 && (a.Status < 100 || a.Status > 599) {
		return Fault{}, fmt.Errorf("status %d is not an HTTP status", a.Status)
	}
	if a.Latency != "" {
		d, err := time.ParseDuration(a.Latency)
		if err != nil {
			return Fault{}, fmt.Errorf("latency: %v", err)
		}
		f.Latency = d
	}
	return f, nil
}

func statusFor(err error) int {
	if errors.Is(err, ErrNotFound) {
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}

package api

import (
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
)

//go:embed ui/pair.html ui/forbidden.html
var uiFS embed.FS

// The pages are parsed once; html/template escapes every value by context.
var (
	pairPage      = template.Must(template.ParseFS(uiFS, "ui/pair.html"))
	forbiddenPage = template.Must(template.ParseFS(uiFS, "ui/forbidden.html"))
)

// JobPreview is what the page shows of a job beyond its state: the
// slicer's thumbnail (decoded from the G-code, held in memory only) and
// its time estimate.
type JobPreview struct {
	Thumbnail     []byte
	ThumbnailType string  // "image/png" or "image/jpeg"
	EstimatedTime float64 // seconds; 0 unknown
}

// PreviewSource is implemented by backends that keep job previews.
type PreviewSource interface {
	JobPreview(jobID string) (JobPreview, bool)
}

// The cards of the page, one per state the printer can be in.
const (
	cardUnpaired  = "unpaired"  // not paired (or pairing lost): name field, Start pairing
	cardCode      = "code"      // a code is waiting for the owner to enter it
	cardKlipper   = "klipper"   // Klipper shut down, failed or not connected
	cardPreparing = "preparing" // downloading and checking (or checking a local file)
	cardPrinting  = "printing"
	cardBed       = "bed" // a print ended: waiting for the bed-clear confirmation
	cardFailed    = "failed"
	cardIdle      = "idle"
)

// uiState decides the card from the daemon's status.
func (s *Server) uiState(st apitype.Status, p apitype.Pairing) apitype.UIState {
	u := apitype.UIState{Printer: st.Printer.Name, Health: st.Health, Actions: []string{}, MarketplaceURL: siteOf(st.Marketplace)}
	if u.Printer == "" {
		u.Printer = p.PrinterName // the name a pending pairing will give it
	}
	if u.Printer == "" {
		u.Printer = "This printer"
	}
	paired := st.Auth.Authenticated && !st.Auth.PairingLost
	switch {
	case !paired && p.Status == "pending" && p.PairingCode != "":
		u.Card, u.Headline, u.Code, u.ExpiresAt = cardCode, "Enter this code in the LMNT Marketplace", p.PairingCode, p.ExpiresAt
		u.Detail = "This page changes as soon as the printer is paired."
		return u
	case !paired:
		u.Card, u.Actions = cardUnpaired, []string{"pair"}
		u.Headline = "Not paired yet"
		u.Detail = "Pair this printer with your LMNT Marketplace account to receive the prints you buy."
		switch {
		case st.Auth.PairingLost:
			u.Headline = "Pairing lost"
			u.Detail = "The LMNT Marketplace no longer accepts this printer's pairing (it was removed or paired elsewhere). Pair it again; it keeps its name."
		case p.Status == "expired" || p.Status == "failed":
			u.Detail = "The last pairing code " + p.Status + ". Start pairing again for a new code."
		}
		return u
	}
	if st.Klipper.Problem != "" {
		u.Card, u.Headline, u.NextStep = cardKlipper, st.Klipper.Problem, st.Klipper.NextStep
		u.Detail = "Prints wait until Klipper is ready again."
		return u
	}
	if a := st.Jobs.Active; a != nil {
		j := s.uiJob(*a, st)
		u.Job = &j
		switch a.State {
		case apitype.JobPrinting, apitype.JobPaused:
			u.Card, u.Headline = cardPrinting, "Printing"
			if a.State == apitype.JobPaused {
				u.Headline = "Paused"
			}
		default:
			u.Card, u.Headline = cardPreparing, "Getting the print ready"
			u.Detail = "Downloading and checking the file; it exists only in memory."
			if a.Local {
				u.Detail = "Checking the file; it exists only in memory."
			}
		}
		return u
	}
	var last *apitype.JobInfo
	if len(st.Jobs.Finished) > 0 {
		last = &st.Jobs.Finished[0]
	}
	if !st.Jobs.AutoStart && !st.Jobs.BedClear {
		u.Card, u.Actions, u.Headline = cardBed, []string{"ready"}, "Is the bed clear?"
		u.Detail = "A print has ended. Remove it, then confirm so the next job may start."
		if n := len(st.Jobs.Queue); n > 0 {
			u.Detail = fmt.Sprintf("A print has ended and %d job(s) wait. Remove the print, then confirm so the next job may start.", n)
		}
		if last != nil && last.State == apitype.JobFailed {
			j := s.uiJob(*last, st)
			u.Job = &j
		}
		return u
	}
	if last != nil && (last.State == apitype.JobFailed) && len(st.Jobs.Queue) == 0 {
		j := s.uiJob(*last, st)
		u.Card, u.Job, u.Headline = cardFailed, &j, "The last print did not complete"
		u.Detail = plainFailure(last.Message)
		u.NextStep = "New purchases print as usual. If this keeps happening, run lmnt doctor on the printer."
		return u
	}
	u.Card, u.Headline = cardIdle, "Ready for the next print"
	u.Detail = "Paired and idle: prints you buy in the LMNT Marketplace start here."
	if n := len(st.Jobs.Queue); n > 0 {
		u.Headline = fmt.Sprintf("%d job(s) queued", n)
		u.Detail = st.Jobs.Waiting
	}
	return u
}

// uiJob describes a job for the page; progress while downloading comes from
// the transfer, while printing from Klipper.
func (s *Server) uiJob(a apitype.JobInfo, st apitype.Status) apitype.UIJob {
	j := apitype.UIJob{ID: a.ID, Title: a.Name, State: string(a.State), Progress: a.Progress, Message: a.Message}
	if j.Title == "" {
		j.Title = "Job " + a.ID
	}
	j.Title = strings.TrimSuffix(j.Title, ".gcode")
	if a.State == apitype.JobDownloading {
		j.Progress = -1
		if t := st.Transfer; t != nil && t.JobID == a.ID && t.Total > 0 {
			j.Progress = float64(t.Bytes) / float64(t.Total)
		}
	}
	var est float64
	if ps, ok := s.o.Backend.(PreviewSource); ok {
		if pv, ok := ps.JobPreview(a.ID); ok {
			if len(pv.Thumbnail) > 0 {
				j.Thumbnail = "ui/thumbnail?job=" + url.QueryEscape(a.ID)
			}
			est = pv.EstimatedTime
		}
	}
	if a.State == apitype.JobPrinting || a.State == apitype.JobPaused {
		j.Elapsed = st.Klipper.PrintDuration
		switch {
		case a.Progress >= 0.05 && j.Elapsed > 0:
			j.Remaining = j.Elapsed/a.Progress - j.Elapsed
		case est > 0:
			j.Remaining = max(est-j.Elapsed, 0)
		}
	}
	return j
}

// plainFailure turns a job's failure message into an owner's words.
func plainFailure(msg string) string {
	switch {
	case strings.HasPrefix(msg, apitype.VerificationFailed):
		// Deliberately no detail (no decryption oracle): the file never
		// reached Klipper, and that is all anyone outside lmntd learns.
		return msg + ": it was not a file this printer can print, so it never reached Klipper."
	case strings.HasPrefix(msg, "Download failed"):
		return "The file could not be downloaded from the LMNT Marketplace."
	case msg == "":
		return "No reason was recorded."
	}
	return msg
}

// siteOf is the marketplace's site (scheme and host) for a link.
func siteOf(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/"
}

func (s *Server) handleUIState(w http.ResponseWriter, r *http.Request) {
	st := s.backend().Status(r.Context())
	p, _ := s.backend().PairingStatus(r.Context())
	writeJSON(w, http.StatusOK, s.uiState(st, p))
}

// handleUIThumbnail serves a job's thumbnail from memory (the G-code it
// came from exists only in a sealed memfd; nothing is written to disk).
func (s *Server) handleUIThumbnail(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.o.Backend.(PreviewSource)
	if !ok {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "no thumbnails"))
		return
	}
	pv, ok := ps.JobPreview(r.URL.Query().Get("job"))
	if !ok || len(pv.Thumbnail) == 0 {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "this job has no thumbnail"))
		return
	}
	w.Header().Set("Content-Type", pv.ThumbnailType)
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	_, _ = w.Write(pv.Thumbnail)
}

// handleUI serves the embedded status and pairing page. It loads nothing
// from the internet; its inline script and style run only with this
// response's CSP nonce.
func (s *Server) handleUI(w http.ResponseWriter, r *http.Request) {
	nonce, err := newNonce()
	if err != nil {
		writeError(w, err)
		return
	}
	st := s.backend().Status(r.Context())
	p, _ := s.backend().PairingStatus(r.Context())
	initial := s.uiState(st, p)
	s.securityHeaders(w, nonce, "img-src 'self' data:; ")
	data := struct {
		Nonce, PrinterName string
		Initial            apitype.UIState
	}{nonce, initial.Printer, initial}
	if err := pairPage.Execute(w, data); err != nil {
		s.log.Warn("api: rendering the page", "err", err)
	}
}

func newNonce() (string, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(n[:]), nil
}

func (s *Server) securityHeaders(w http.ResponseWriter, nonce, extra string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; connect-src 'self'; "+extra+"script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

// refuse answers a refused request: a browser on the LAN gets a short page
// saying what to add to the configuration (with its own network), anyone
// else the JSON error.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	p := peerOf(r)
	if p == nil || p.unix && !p.proxy || r.Method != http.MethodGet || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		writeError(w, Errorf(http.StatusForbidden, "forbidden", "%s", err.Error()))
		return
	}
	// The browser's address: the peer on TCP, the proxy's X-Forwarded-For
	// on the proxy socket (the only channel where that header counts).
	client := p.addr.Addr()
	if p.proxy {
		client, _ = forwardedFor(r)
	}
	nonce, nerr := newNonce()
	// Loopback is never a network to allow (every local user connects from
	// it): such a caller gets the plain refusal, which says why.
	if nerr != nil || !client.IsValid() || client.IsLoopback() {
		writeError(w, Errorf(http.StatusForbidden, "forbidden", "%s", err.Error()))
		return
	}
	bits := 24
	if client.Is6() {
		bits = 64
	}
	subnet, _ := client.Prefix(bits)
	s.securityHeaders(w, nonce, "")
	w.WriteHeader(http.StatusForbidden)
	data := struct {
		Nonce, Client, Subnet string
	}{nonce, client.String(), subnet.String()}
	if err := forbiddenPage.Execute(w, data); err != nil {
		s.log.Warn("api: rendering the refusal page", "err", err)
	}
}

package api

import (
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"
)

//go:embed ui/pair.html
var uiFS embed.FS

// pairPage is parsed once; html/template escapes every value by context.
var pairPage = template.Must(template.ParseFS(uiFS, "ui/pair.html"))

type pageData struct {
	Nonce, PrinterName, Summary            string
	PairStatus, Code, PairMessage, Waiting string
}

// handleUI serves the embedded pairing page. It loads nothing from the
// internet; its inline script and style run only with this response's CSP
// nonce.
func (s *Server) handleUI(w http.ResponseWriter, r *http.Request) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		writeError(w, err)
		return
	}
	nonce := base64.StdEncoding.EncodeToString(n[:])
	st := s.backend().Status(r.Context())
	d := pageData{Nonce: nonce, PrinterName: st.Printer.Name, Summary: st.Summary, Waiting: st.Jobs.Waiting, PairStatus: "not started"}
	if d.PrinterName == "" {
		d.PrinterName = "this printer"
	}
	if p, err := s.backend().PairingStatus(r.Context()); err == nil {
		d.PairStatus, d.PairMessage = p.Status, p.Message
		if p.Status == "pending" {
			d.Code = p.PairingCode
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; connect-src 'self'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if err := pairPage.Execute(w, d); err != nil {
		s.log.Warn("api: rendering the pairing page", "err", err)
	}
}

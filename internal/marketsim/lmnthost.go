package marketsim

import (
	"net/http"
	"slices"
	"strings"
)

// lmntHostHandler is a second LMNT host (the old plugin's code defaults to
// printers.lmnt.co while its installer writes api.lmnt.co, so a download
// URL may sit on an LMNT host that is not the API base). Its file URLs
// need the printer token: without it they answer 401, as the real one
// does, and a printer must fall back to the API's download proxy.
func (s *Server) lmntHostHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /files/{file}", s.call(CallDownload, func(w http.ResponseWriter, r *http.Request) {
		id, _ := strings.CutSuffix(r.PathValue("file"), ".gcode.enc")
		s.serveCiphertext(w, r, id)
	}))
	return mux
}

// TokenPresentation is one request that carried the printer token (or any
// bearer token), as the simulator's hosts saw it.
type TokenPresentation struct {
	// Host is which of the simulator's hosts received it: api, storage,
	// push, lmnt-host or admin.
	Host string `json:"host"`
	// Path is the request path (no query).
	Path string `json:"path"`
	// Kind is the token's kind: printer, user, or invalid.
	Kind string `json:"kind"`
}

// TokenPresentations lists every request that carried a bearer token, on
// every host, in order: tests assert the printer token never reached the
// storage host.
func (s *Server) TokenPresentations() []TokenPresentation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tokenSeen)
}

// recordTokens wraps a host's handler so every bearer token it receives is
// recorded with the host's name. dst is the listener being set up (it is
// filled in once listening).
func (s *Server) recordTokens(dst **listener, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := bearer(r); tok != "" {
			kind := "invalid"
			if c, err := verifyJWT(s.secret, tok); err == nil {
				kind = c.Kind
			}
			s.mu.Lock()
			s.tokenSeen = append(s.tokenSeen, TokenPresentation{Host: s.hostName(dst), Path: r.URL.Path, Kind: kind})
			s.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) hostName(dst **listener) string {
	switch dst {
	case &s.api:
		return "api"
	case &s.storage:
		return "storage"
	case &s.push:
		return "push"
	case &s.lmnt2:
		return "lmnt-host"
	case &s.admin:
		return "admin"
	}
	return "?"
}

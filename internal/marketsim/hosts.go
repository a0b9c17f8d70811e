package marketsim

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

type faultKey struct{}

func withFault(ctx context.Context, f Fault) context.Context {
	return context.WithValue(ctx, faultKey{}, f)
}

func faultFrom(ctx context.Context) (Fault, bool) {
	f, ok := ctx.Value(faultKey{}).(Fault)
	return f, ok
}

// storageHandler is the fake third-party storage host: it serves a job's
// ciphertext for a valid signature and records every Authorization header
// it receives (the printer must never send its token here).
func (s *Server) storageHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jobs/{file}", s.call(CallStorage, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if a := r.Header.Get("Authorization"); a != "" {
			s.storageAuth = append(s.storageAuth, a)
		}
		id, _ := strings.CutSuffix(r.PathValue("file"), ".gcode.enc")
		j, ok := s.jobs[id]
		s.mu.Unlock()
		if !ok || j.download != DownloadStorage || r.URL.Query().Get("sig") != j.storageSig {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, "<Error><Code>AccessDenied</Code></Error>")
			return
		}
		serveBody(w, r, j.enc.ciphertext)
	}))
	return mux
}

// pushHandler is the Firebase Realtime Database stand-in:
// GET /printers/{id}/queue.json with Accept: text/event-stream gives a put
// of the queue on connect and on every change, and keep-alives between.
func (s *Server) pushHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /printers/{id}/queue.json", func(w http.ResponseWriter, r *http.Request) {
		s.logRequest(CallPush, r.PathValue("id"))
		s.mu.Lock()
		if a := r.Header.Get("Authorization"); a != "" {
			s.pushAuth = append(s.pushAuth, a)
		}
		s.mu.Unlock()
		f, faulty := s.takeFault(CallPush)
		if faulty && f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if faulty && f.Status != 0 {
			writeError(w, f.Status, fmt.Sprintf("injected fault: HTTP %d", f.Status))
			return
		}
		s.mu.Lock()
		p, ok := s.printers[r.PathValue("id")]
		var wake chan struct{}
		if ok {
			p.pushConnections++
			wake = make(chan struct{}, 1)
			p.watchers[wake] = struct{}{}
		}
		s.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, "no such printer")
			return
		}
		defer func() {
			s.mu.Lock()
			delete(p.watchers, wake)
			s.mu.Unlock()
		}()
		if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			s.mu.Lock()
			body := s.queueSnapshotLocked(p)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, body)
			return
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		if faulty && f.Silent {
			// A stale stream: the connection stays open, nothing arrives.
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
			return
		}
		put := func() error {
			s.mu.Lock()
			data := mustJSON(map[string]any{"path": "/", "data": s.queueSnapshotLocked(p)})
			s.mu.Unlock()
			if _, err := fmt.Fprintf(w, "event: put\ndata: %s\n\n", data); err != nil {
				return err
			}
			return rc.Flush()
		}
		if put() != nil || (faulty && f.Drop) {
			return
		}
		keepAlive := time.NewTicker(s.o.KeepAlive)
		defer keepAlive.Stop()
		dropped := s.pushDropped()
		for {
			select {
			case <-dropped:
				return
			case <-r.Context().Done():
				return
			case <-s.closing:
				return
			case <-wake:
				if put() != nil {
					return
				}
			case <-keepAlive.C:
				if _, err := fmt.Fprint(w, "event: keep-alive\ndata: null\n\n"); err != nil || rc.Flush() != nil {
					return
				}
				s.mu.Lock()
				p.pushKeepAlives++
				s.mu.Unlock()
			}
		}
	})
	return mux
}

// queueSnapshotLocked is the RTDB node value: job id ⇒ {status}.
func (s *Server) queueSnapshotLocked(p *printer) map[string]any {
	out := map[string]any{}
	for _, id := range p.queue {
		out[id] = map[string]string{"status": s.jobs[id].status}
	}
	return out
}

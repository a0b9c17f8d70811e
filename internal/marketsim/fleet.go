package marketsim

import (
	"net/http"
	"slices"
	"sync"
	"time"
)

// Request is one entry of the request log: which printer (from its token,
// or the push stream's path; "" when neither names one) called what, when,
// and what the simulator answered (0 for a push stream, which has no single
// answer).
type Request struct {
	At      time.Time `json:"at"`
	Printer string    `json:"printer,omitempty"`
	Call    Call      `json:"call"`
	Status  int       `json:"status,omitempty"`
}

// fleetState is the request log, the timed faults and the push-stream
// breaker.
type fleetState struct {
	mu      sync.Mutex
	log     []Request
	windows map[Call]timedFault
	drop    chan struct{} // closed to end every open push stream
}

type timedFault struct {
	f     Fault
	until time.Time
}

// logRequest appends to the request log and returns the entry's index,
// for the answer's status.
func (s *Server) logRequest(call Call, printer string) int {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.log = append(fs.log, Request{At: s.o.Now(), Printer: printer, Call: call})
	return len(fs.log) - 1
}

func (s *Server) logStatus(i, status int) {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.log[i].Status = status
}

// printerOf names the printer whose token authorises r ("" when none).
func (s *Server) printerOf(bearerToken string) string {
	claims, err := verifyJWT(s.secret, bearerToken)
	if err != nil || claims.Kind != "printer" {
		return ""
	}
	return claims.PrinterID
}

// Requests is the request log so far, oldest first.
func (s *Server) Requests() []Request {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	return slices.Clone(s.fleet.log)
}

// SetFaultFor applies f to every request of call for the next d (Count is
// ignored), besides and before any fault set with SetFault.
func (s *Server) SetFaultFor(call Call, f Fault, d time.Duration) {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.windows == nil {
		fs.windows = map[Call]timedFault{}
	}
	f.Count = 0
	fs.windows[call] = timedFault{f: f, until: s.o.Now().Add(d)}
}

// outageCalls are the calls served by the marketplace API itself; the push
// stream is a separate service (Firebase) and storage a third party.
var outageCalls = []Call{CallPairStart, CallPairStatus, CallPairComplete, CallLogin, CallRegister, CallRefresh,
	CallPoll, CallJobDetails, CallDownload, CallJobStatus}

// SetOutage makes the marketplace API answer every call with status (503
// when 0) for d, as a failed deployment behind a load balancer does. The
// push host and the storage host stay up.
func (s *Server) SetOutage(status int, d time.Duration) {
	if status == 0 {
		status = 503
	}
	for _, c := range outageCalls {
		s.SetFaultFor(c, Fault{Status: status}, d)
	}
}

// timedFaultFor is the timed fault now in force for call, if any.
func (s *Server) timedFaultFor(call Call) (Fault, bool) {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	w, ok := fs.windows[call]
	if !ok {
		return Fault{}, false
	}
	if !s.o.Now().Before(w.until) {
		delete(fs.windows, call)
		return Fault{}, false
	}
	return w.f, true
}

// statusRecorder remembers the status a handler answered, for the log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush, abort).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// pushDropped is closed when DropPushStreams ends the open streams.
func (s *Server) pushDropped() <-chan struct{} {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.drop == nil {
		fs.drop = make(chan struct{})
	}
	return fs.drop
}

// DropPushStreams ends every open push stream (the printers reconnect),
// as a database failover does.
func (s *Server) DropPushStreams() {
	fs := &s.fleet
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.drop != nil {
		close(fs.drop)
	}
	fs.drop = make(chan struct{})
}

// handleRequests serves the request log (GET /admin/requests), oldest
// first, for measurements.
func (s *Server) handleRequests(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Requests())
}

package marketsim

import (
	"fmt"
	"net/http"
	"time"
)

// Call names one kind of request the simulator serves; faults and counters
// are per call.
type Call string

// The calls of the contract (both profiles share a name).
const (
	CallPairStart    Call = "pair_start"
	CallPairStatus   Call = "pair_status"
	CallPairComplete Call = "pair_complete"
	CallLogin        Call = "login"
	CallRegister     Call = "register"
	CallRefresh      Call = "refresh"
	CallPoll         Call = "poll"
	CallJobDetails   Call = "job_details"
	CallDownload     Call = "download" // the marketplace's own download routes (proxy, file URL)
	CallStorage      Call = "storage"  // the fake third-party storage host
	CallJobStatus    Call = "job_status"
	CallPush         Call = "push"
)

// AllCalls lists every Call.
var AllCalls = []Call{CallPairStart, CallPairStatus, CallPairComplete, CallLogin, CallRegister, CallRefresh,
	CallPoll, CallJobDetails, CallDownload, CallStorage, CallJobStatus, CallPush}

func parseCall(s string) (Call, error) {
	for _, c := range AllCalls {
		if string(c) == s {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown call %q (one of %v)", s, AllCalls)
}

// Fault is injected into the next Count requests of a call (0 ⇒ every
// request until cleared). Latency applies first; then the first of Drop,
// Silent, Status takes effect; TruncateAt applies to download bodies and
// Silent/Drop to the push stream as described.
type Fault struct {
	Status  int           // answer this HTTP status with a JSON error instead
	Latency time.Duration // wait before answering
	// TruncateAt (download, storage): announce the full Content-Length but
	// close the connection after this many body bytes.
	TruncateAt int64
	// TrickleEvery (download, storage): send the body one byte at a time,
	// this far apart (a hostile host holding the job slot).
	TrickleEvery time.Duration
	// Silent: hold the request without answering until the client gives up.
	// For the push stream: send the headers, then nothing at all.
	Silent bool
	// Drop: close the connection without an answer. For the push stream:
	// send the initial put, then close.
	Drop  bool
	Count int
}

// SetFault installs f for call, replacing any earlier one.
func (s *Server) SetFault(call Call, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[call] = &f
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// takeFault counts the call and returns the fault to apply to it, if any.
func (s *Server) takeFault(call Call) (Fault, bool) {
	if f, ok := s.timedFaultFor(call); ok {
		s.mu.Lock()
		s.calls[call]++
		s.mu.Unlock()
		return f, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[call]++
	f, ok := s.faults[call]
	if !ok {
		return Fault{}, false
	}
	out := *f
	if f.Count > 0 {
		f.Count--
		if f.Count == 0 {
			delete(s.faults, call)
		}
	}
	return out, true
}

// enter counts a request of call as in flight until the returned func runs.
func (s *Server) enter(call Call) func() {
	s.mu.Lock()
	s.inflight[call]++
	s.maxInflight[call] = max(s.maxInflight[call], s.inflight[call])
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.inflight[call]--
		s.mu.Unlock()
	}
}

// MaxConcurrent is the most requests of call ever in flight at once.
func (s *Server) MaxConcurrent(call Call) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInflight[call]
}

// Calls is how many requests of call the simulator has received.
func (s *Server) Calls(call Call) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[call]
}

// applyFault runs the request-level part of f. It reports whether the
// request was fully handled (the handler must not answer).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Latency > 0 {
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			return true
		case <-s.closing:
			return true
		}
	}
	switch {
	case f.Drop:
		dropConnection(w)
		return true
	case f.Silent:
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return true
	case f.Status != 0:
		writeError(w, f.Status, fmt.Sprintf("injected fault: HTTP %d", f.Status))
		return true
	}
	return false
}

// dropConnection closes the connection under the handler without an
// answer (net/http aborts the connection, or the HTTP/2 stream, on this
// panic without logging it).
func dropConnection(http.ResponseWriter) {
	panic(http.ErrAbortHandler)
}

package marketplace

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// StatusReport is one job-status post. Stats go only with the current
// profile (legacy accepts status and message).
type StatusReport struct {
	Status        string
	Message       string
	FilamentUsed  *float64 // mm
	PrintDuration *float64 // s
	TotalDuration *float64 // s
}

// Outcome classifies a status post for the caller's outbox.
type Outcome int

const (
	// Accepted: 2xx, the report is delivered.
	Accepted Outcome = iota + 1
	// Retryable: network error, timeout, 5xx, 408, 429, or 401 even after a
	// token refresh. Keep the report and try again later.
	Retryable
	// Rejected: any other 4xx. The marketplace refused this report for
	// good; retrying the same body will not help.
	Rejected
)

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Retryable:
		return "retryable"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// StatusResult is the outcome of one attempt.
type StatusResult struct {
	Outcome    Outcome
	HTTPStatus int    // 0 when no answer arrived
	Answer     string // the server's answer to a rejection (≤ 4 KiB)
	Err        error  // nil when Accepted
}

// PostJobStatus makes exactly one attempt (plus one refresh-and-retry on
// 401) to report a job's status, and classifies the result. Retrying is the
// caller's job.
func (c *Client) PostJobStatus(ctx context.Context, jobID string, r StatusReport) StatusResult {
	if jobID == "" || r.Status == "" {
		return StatusResult{Outcome: Rejected, Err: errors.New("marketplace: job status needs a job id and a status")}
	}
	body := map[string]any{"status": r.Status}
	if r.Message != "" {
		body["message"] = r.Message
	}
	if c.opts.Profile == ProfileCurrent {
		if r.FilamentUsed != nil {
			body["filament_used"] = *r.FilamentUsed
		}
		if r.PrintDuration != nil {
			body["print_duration"] = *r.PrintDuration
		}
		if r.TotalDuration != nil {
			body["total_duration"] = *r.TotalDuration
		}
	}
	u := c.endpoint(c.paths.jobStatusPrefix+url.PathEscape(jobID), nil)
	err := c.authedJSON(ctx, http.MethodPost, u, body, nil)
	return classifyStatus(err)
}

func classifyStatus(err error) StatusResult {
	if err == nil {
		return StatusResult{Outcome: Accepted}
	}
	var he *HTTPError
	if !errors.As(err, &he) {
		// Network, timeout, no token, lost pairing: nothing reached a
		// verdict on the report itself; keep it.
		return StatusResult{Outcome: Retryable, Err: err}
	}
	res := StatusResult{HTTPStatus: he.StatusCode, Answer: he.Body, Err: err}
	switch code := he.StatusCode; {
	case code >= 500, code == http.StatusUnauthorized, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		res.Outcome = Retryable
	default:
		res.Outcome = Rejected
	}
	return res
}

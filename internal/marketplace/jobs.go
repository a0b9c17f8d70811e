package marketplace

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
)

// Job is one entry of the print queue. DownloadURL, DEKPackage and IVHex are
// secrets of the job: String and LogValue leave them out.
type Job struct {
	ID            string
	PurchaseID    string
	Status        string
	CreatedAt     string
	DownloadURL   string // encrypted_gcode_download_url (may be a signed URL)
	DEKPackage    string // gcode_dek_encrypted_hex (current) or gcode_dek_package (legacy)
	IVHex         string // gcode_iv_hex
	UserAccountID string
	PrinterKEKID  string
}

func (j Job) String() string { return "job " + j.ID }

// LogValue implements slog.LogValuer with no URL, DEK package or IV.
func (j Job) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", j.ID), slog.String("status", j.Status), slog.String("purchase_id", j.PurchaseID))
}

type wireJob struct {
	PrintJobID    flexString `json:"print_job_id"`
	PurchaseID    flexString `json:"purchase_id"`
	Status        string     `json:"status"`
	CreatedAt     string     `json:"created_at"`
	DownloadURL   string     `json:"encrypted_gcode_download_url"`
	DEKHex        string     `json:"gcode_dek_encrypted_hex"`
	DEKPackage    string     `json:"gcode_dek_package"`
	IVHex         string     `json:"gcode_iv_hex"`
	UserAccountID flexString `json:"user_account_id"`
	PrinterKEKID  flexString `json:"printer_kek_id"`
}

// Poll fetches the print queue once (401 ⇒ refresh and retry once).
func (c *Client) Poll(ctx context.Context) ([]Job, error) {
	var ans struct {
		Jobs []wireJob `json:"jobs"`
	}
	if err := c.authedJSON(ctx, http.MethodGet, c.endpoint(c.paths.poll, nil), nil, &ans); err != nil {
		return nil, err
	}
	jobs := make([]Job, 0, len(ans.Jobs))
	for i, w := range ans.Jobs {
		if w.PrintJobID == "" {
			return nil, fmt.Errorf("%w: poll answer: job %d has no print_job_id", ErrBadResponse, i)
		}
		dek := w.DEKHex
		if dek == "" {
			dek = w.DEKPackage
		}
		jobs = append(jobs, Job{
			ID: string(w.PrintJobID), PurchaseID: string(w.PurchaseID), Status: w.Status, CreatedAt: w.CreatedAt,
			DownloadURL: w.DownloadURL, DEKPackage: dek, IVHex: w.IVHex,
			UserAccountID: string(w.UserAccountID), PrinterKEKID: string(w.PrinterKEKID),
		})
	}
	return jobs, nil
}

// JobFileURL asks get-print-job for the job's gcode_file_url: the fallback
// when a polled job carries no download URL.
func (c *Client) JobFileURL(ctx context.Context, jobID string) (string, error) {
	var ans struct {
		GcodeFileURL string `json:"gcode_file_url"`
	}
	u := c.endpoint(pathJobDetails, url.Values{"print_job_id": {jobID}})
	if err := c.authedJSON(ctx, http.MethodGet, u, nil, &ans); err != nil {
		return "", err
	}
	if ans.GcodeFileURL == "" {
		return "", fmt.Errorf("%w: get-print-job answer lacks gcode_file_url", ErrBadResponse)
	}
	return ans.GcodeFileURL, nil
}

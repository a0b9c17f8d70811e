package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Job is one entry of the print queue. DownloadURL, DEKPackage and IVHex are
// secrets of the job: String and LogValue leave them out.
type Job struct {
	ID            string
	PurchaseID    string
	Status        string
	CreatedAt     string // RFC 3339 UTC, whatever form the server sent; "" if none
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

// Poll fetches the print queue once (401 ⇒ refresh and retry once). Entries
// are decoded one by one: an entry that cannot be used is skipped with a
// log line naming its id and the field, and never costs the other jobs of
// the poll. Only an answer that is not {"jobs": [...]} at all is an error.
func (c *Client) Poll(ctx context.Context) ([]Job, error) {
	return c.poll(ctx, nil)
}

// poll is Poll; a skipped entry already reported (in reported, by id,
// field and problem) is logged again at debug level only, so a bad entry
// that stays in the queue does not repeat its warning at every poll.
// reported (nil: warn always) is updated to this poll's skipped entries.
func (c *Client) poll(ctx context.Context, reported map[string]bool) ([]Job, error) {
	var body json.RawMessage
	if err := c.authedJSON(ctx, http.MethodGet, c.endpoint(c.paths.poll, nil), nil, &body); err != nil {
		return nil, err
	}
	jobs, skipped, err := decodePollAnswer(body)
	if err != nil {
		return nil, err
	}
	now := map[string]bool{}
	for _, s := range skipped {
		key := s.ID + "\x00" + s.Field + "\x00" + s.Problem
		level := slog.LevelWarn
		if reported[key] {
			level = slog.LevelDebug
		}
		now[key] = true
		c.log.Log(ctx, level, "marketplace: poll entry skipped", "entry", s.Index, "id", s.ID, "field", s.Field, "problem", s.Problem)
	}
	if reported != nil {
		clear(reported)
		maps.Copy(reported, now)
	}
	for _, n := range noticesOf(jobs) {
		c.log.Debug("marketplace: poll entry field ignored", "id", n.ID, "field", n.Field, "problem", n.Problem)
	}
	return jobsOnly(jobs), nil
}

// SkippedEntry is a poll entry the client could not use.
type SkippedEntry struct {
	Index   int    // position in the answer's jobs array
	ID      string // print_job_id when it could be read, else ""
	Field   string // the field at fault ("" when the entry is not an object)
	Problem string
}

// fieldNotice is an informational field of a usable entry that was ignored
// because its type is unknown: the job still prints.
type fieldNotice struct{ ID, Field, Problem string }

type decodedJob struct {
	job     Job
	notices []fieldNotice
}

func noticesOf(ds []decodedJob) []fieldNotice {
	var out []fieldNotice
	for _, d := range ds {
		out = append(out, d.notices...)
	}
	return out
}

func jobsOnly(ds []decodedJob) []Job {
	out := make([]Job, len(ds))
	for i, d := range ds {
		out[i] = d.job
	}
	return out
}

// decodePollAnswer splits a poll answer into usable jobs and skipped entries.
func decodePollAnswer(body []byte) ([]decodedJob, []SkippedEntry, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, nil, fmt.Errorf("%w: poll answer is not a JSON object: %v", ErrBadResponse, err)
	}
	raw, ok := top["jobs"]
	if !ok || isNull(raw) {
		return nil, nil, nil // the old plugin reads a missing or empty list as "no jobs"
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, nil, fmt.Errorf("%w: poll answer: jobs is %s, not an array", ErrBadResponse, describeJSON(string(raw)))
	}
	var jobs []decodedJob
	var skipped []SkippedEntry
	for i, e := range entries {
		d, skip := decodePollEntry(e)
		if skip != nil {
			skip.Index = i
			skipped = append(skipped, *skip)
			continue
		}
		jobs = append(jobs, d)
	}
	return jobs, skipped, nil
}

// decodePollEntry reads one queue entry. The id and the crypto and download
// fields must be usable (or absent where the contract allows it); the
// informational fields are best effort.
func decodePollEntry(e json.RawMessage) (decodedJob, *SkippedEntry) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e, &m); err != nil || m == nil {
		return decodedJob{}, &SkippedEntry{Problem: "entry is " + describeJSON(string(e)) + ", not an object"}
	}
	var d decodedJob
	id, err := idField(m["print_job_id"])
	switch {
	case err != nil:
		return d, &SkippedEntry{Field: "print_job_id", Problem: err.Error()}
	case id == "":
		return d, &SkippedEntry{Field: "print_job_id", Problem: "missing"}
	}
	d.job.ID = id
	skip := func(field string, err error) (decodedJob, *SkippedEntry) {
		return decodedJob{}, &SkippedEntry{ID: id, Field: field, Problem: err.Error()}
	}
	if d.job.DownloadURL, err = stringField(m["encrypted_gcode_download_url"]); err != nil {
		return skip("encrypted_gcode_download_url", err)
	}
	// The real poll (and the old plugin of every era) names the DEK package
	// gcode_dek_encrypted_hex; gcode_dek_package is the seed README's name.
	dekField := "gcode_dek_encrypted_hex"
	if d.job.DEKPackage, err = stringField(m[dekField]); err == nil && d.job.DEKPackage == "" {
		dekField = "gcode_dek_package"
		d.job.DEKPackage, err = stringField(m[dekField])
	}
	if err != nil {
		return skip(dekField, err)
	}
	if d.job.IVHex, err = stringField(m["gcode_iv_hex"]); err != nil {
		return skip("gcode_iv_hex", err)
	}
	note := func(field string, err error) {
		d.notices = append(d.notices, fieldNotice{ID: id, Field: field, Problem: err.Error()})
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"purchase_id", &d.job.PurchaseID}, {"user_account_id", &d.job.UserAccountID}, {"printer_kek_id", &d.job.PrinterKEKID}} {
		if *f.dst, err = idField(m[f.name]); err != nil {
			note(f.name, err)
		}
	}
	if d.job.Status, err = stringField(m["status"]); err != nil {
		note("status", err)
	}
	if raw, ok := m["created_at"]; ok {
		t, err := parseWireTime(raw)
		switch {
		case err == nil:
			d.job.CreatedAt = t.Format(time.RFC3339Nano)
		case !errors.Is(err, errNoTime):
			note("created_at", err)
		}
	}
	return d, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// stringField reads an optional string: absent and null are "".
func stringField(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("is %s, not a string", describeJSON(string(raw)))
	}
	return strings.TrimSpace(s), nil
}

// idField reads an id: a string, or an integer (ids are numbers on some
// marketplace builds); absent and null are "".
func idField(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var f flexString
	if err := json.Unmarshal(raw, &f); err != nil {
		return "", fmt.Errorf("is %s, not a string or number", describeJSON(string(raw)))
	}
	return strings.TrimSpace(string(f)), nil
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

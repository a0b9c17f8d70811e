// Package apitype holds the JSON types of lmntd's local API: what the
// daemon's API socket sends and receives, and what the lmnt CLI and the
// status page read. It imports nothing but the standard library, so the
// shipped CLI can speak the API without linking the daemon (the job
// engine, the pipeline, the Klipper bridge, the marketplace client). The
// daemon converts its own types into these at the API boundary; a field or
// state added on one side and forgotten on the other fails the daemon's
// wire tests.
package apitype

import "time"

// Status is the daemon's state in words and fields. Nothing in it is secret.
type Status struct {
	Version string `json:"version"`
	// Instance is the Klipper instance this lmntd serves on a host with
	// several (the config's instance; empty on a one-printer host).
	Instance string `json:"instance,omitempty"`
	// Health is ok, degraded or broken; Summary is the systemd STATUS line.
	Health  string `json:"health"`
	Summary string `json:"summary"`
	Profile string `json:"api_profile"`
	// ProfileReason says why that profile (api_profile "auto" decides from
	// the settings or a probe at start).
	ProfileReason string `json:"api_profile_reason,omitempty"`
	// Marketplace is the base URL (no credentials).
	Marketplace string        `json:"marketplace_url"`
	Auth        AuthStatus    `json:"auth"`
	Printer     PrinterStatus `json:"printer"`
	Key         KeyStatus     `json:"key"`
	Klipper     KlipperStatus `json:"klipper"`
	Jobs        Snapshot      `json:"jobs"`
	Pairing     *Pairing      `json:"pairing,omitempty"`
	LastPoll    *time.Time    `json:"last_poll,omitempty"`
	LastPollErr string        `json:"last_poll_error,omitempty"`
	Restart     bool          `json:"restart_when_idle,omitempty"`
	// Transfer is the latest job download, in progress or done.
	Transfer  *Transfer `json:"transfer,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// AuthStatus is the printer token's public facts (the original plugin's
// "auth" object).
type AuthStatus struct {
	Authenticated bool       `json:"authenticated"`
	PrinterID     string     `json:"printer_id,omitempty"`
	TokenExpiry   *time.Time `json:"token_expiry,omitempty"`
	TokenIssuedAt *time.Time `json:"token_issued_at,omitempty"`
	PairingLost   bool       `json:"pairing_lost,omitempty"`
	// Problem says why the credential degrades health (token expired,
	// refresh refused or failing); "" when it is fine.
	Problem string `json:"problem,omitempty"`
}

// PrinterStatus is how the printer is known to the marketplace.
type PrinterStatus struct {
	Name         string `json:"name,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
}

// KeyStatus is the sealed printer key's state.
type KeyStatus struct {
	// State: ok, missing or broken (does not unseal; Problem and Advice say why).
	State   string `json:"state"`
	KeyID   string `json:"key_id,omitempty"`
	Backend string `json:"backend,omitempty"`
	Problem string `json:"problem,omitempty"`
	Advice  string `json:"advice,omitempty"`
}

// KlipperStatus is the bridge's view of Klipper and the printer.cfg check.
type KlipperStatus struct {
	Connected      bool   `json:"connected"`
	Klippy         string `json:"klippy_state,omitempty"`
	PrintState     string `json:"print_state,omitempty"`
	Version        string `json:"klipper_version,omitempty"`
	ExtraVersion   string `json:"extra_version,omitempty"`
	ConfigFile     string `json:"config_file,omitempty"`
	ConfigOK       bool   `json:"config_ok"`
	ConfigSummary  string `json:"config_summary,omitempty"`
	ConfigFindings int    `json:"config_findings,omitempty"`
	// Problem says what keeps Klipper from printing (not connected, shut
	// down, failed to start: with Klipper's reason), NextStep what to do.
	Problem  string `json:"problem,omitempty"`
	NextStep string `json:"next_step,omitempty"`
	// PrintDuration is Klipper's time spent printing the current file (s).
	PrintDuration float64 `json:"print_duration,omitempty"`
}

// JobStatus is the original plugin's job_status object.
type JobStatus struct {
	CurrentJob  *JobInfo   `json:"current_job"`
	QueueLength int        `json:"queue_length"`
	JobStarted  bool       `json:"job_started"`
	LastCheck   *time.Time `json:"last_check"`
	Waiting     string     `json:"waiting,omitempty"`
}

// RefreshResult is the answer of refresh_token.
type RefreshResult struct {
	PrinterID string    `json:"printer_id"`
	Expiry    time.Time `json:"expiry"`
}

// LoginResult is the answer of user_login: the user's own JWT (the caller
// just proved the password) for register_printer.
type LoginResult struct {
	Token  string `json:"token"`
	UserID string `json:"user_id,omitempty"`
}

// RegisterRequest is register_printer's body.
type RegisterRequest struct {
	UserToken    string `json:"user_token"`
	PrinterName  string `json:"printer_name"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
}

// RegisterResult is register_printer's answer: the original shape without
// printer_token.
type RegisterResult struct {
	ID           string    `json:"id"`
	UserID       string    `json:"user_id,omitempty"`
	PrinterName  string    `json:"printer_name"`
	Manufacturer string    `json:"manufacturer"`
	Model        string    `json:"model"`
	KEKID        string    `json:"kek_id,omitempty"`
	TokenExpires time.Time `json:"token_expires"`
}

// PairRequest describes the printer for a new pairing session.
type PairRequest struct {
	PrinterName   string `json:"printer_name"`
	Manufacturer  string `json:"manufacturer"`
	Model         string `json:"model"`
	ExtruderCount int    `json:"extruder_count"`
	// Force pairs again although the printer is paired (a new account).
	Force bool `json:"force,omitempty"`
}

// Pairing is a pairing session as the owner sees it. The marketplace's
// session id is NOT here: with it anyone could collect the printer token.
type Pairing struct {
	// Status: pending, approved, paired, expired, failed.
	Status      string     `json:"status"`
	PairingCode string     `json:"pairing_code,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	PrinterID   string     `json:"printer_id,omitempty"`
	PrinterName string     `json:"printer_name,omitempty"`
	Message     string     `json:"message,omitempty"`
}

// KeysInfo is the printer key's public side.
type KeysInfo struct {
	KeyStatus
	KeyType   string     `json:"key_type,omitempty"`
	PublicKey string     `json:"public_key,omitempty"` // standard Base64
	SealedAt  *time.Time `json:"sealed_at,omitempty"`
	// Configured is the backend new seals use (seal.backend).
	Configured string `json:"configured_backend,omitempty"`
}

// ImportLegacyRequest is keys/import-legacy's body.
type ImportLegacyRequest struct {
	// Dir is the old plugin's data directory (default: next to printer.cfg's
	// printer_data, lmnt_marketplace/).
	Dir          string `json:"dir,omitempty"`
	RemoveSource bool   `json:"remove_source,omitempty"`
	// Replace allows replacing a key that is already paired.
	Replace bool `json:"replace,omitempty"`
}

// ImportLegacyResult tells what the import did.
type ImportLegacyResult struct {
	KeyID         string   `json:"key_id"`
	Source        string   `json:"source"`
	Files         []string `json:"files"`
	TokenImported bool     `json:"token_imported"`
	PrinterID     string   `json:"printer_id,omitempty"`
	Removed       []string `json:"removed,omitempty"`
	Unchanged     bool     `json:"unchanged,omitempty"`
}

// DoctorReport is the outcome of the health checks, greenboot style:
// a failed required check makes the printer broken (exit 2), a failed
// wanted check degraded (exit 1).
type DoctorReport struct {
	Health string  `json:"health"` // ok, degraded, broken
	Checks []Check `json:"checks"`
}

// Check is one health check.
type Check struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
	// Result: ok, warn, fail, skip.
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// Check results.
const (
	CheckOK   = "ok"
	CheckWarn = "warn"
	CheckFail = "fail"
	CheckSkip = "skip"
)

// Health values.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
	HealthBroken   = "broken"
)

// Grade computes the report's health from its checks.
func (r *DoctorReport) Grade() {
	r.Health = HealthOK
	for _, c := range r.Checks {
		if c.Result != CheckFail && c.Result != CheckWarn {
			continue
		}
		if c.Required && c.Result == CheckFail {
			r.Health = HealthBroken
			return
		}
		r.Health = HealthDegraded
	}
}

// RestartResult answers a restart request.
type RestartResult struct {
	// Pending is true while a job keeps the daemon from restarting yet.
	Pending bool   `json:"pending"`
	Message string `json:"message"`
}

// Transfer is the download (and decryption: one stream) of the latest
// marketplace job: in progress, or Done with how long it took.
type Transfer struct {
	JobID   string  `json:"job_id"`
	Bytes   int64   `json:"bytes"`
	Total   int64   `json:"total"` // -1 when unknown
	Done    bool    `json:"done,omitempty"`
	Seconds float64 `json:"seconds"`
}

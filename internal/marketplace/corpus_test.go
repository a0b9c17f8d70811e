package marketplace

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The corpus under testdata/ holds response bodies shaped like the real
// marketplace's, one directory per endpoint. Field names, types and
// nullability follow what the old plugin (djsplice/lmnt_marketplace_plugin,
// jobs.py and auth.py) reads and what its README shows; the odd shapes are
// those its tolerant Python accepted or survived: timestamps in every form,
// ids as numbers, nulls, unknown types, entries without an id. Each body
// maps to what the client accepts, skips (with the log line) or rejects
// (with the error).

var (
	june1     = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	jwtExp    = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) // exp of the corpus's prn-1 token
	corpusPub = bytes.Repeat([]byte{9}, 32)
)

func corpus(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"testdata"}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type skipWant struct{ id, field string }

func TestCorpusPoll(t *testing.T) {
	for _, tc := range []struct {
		file    string
		accept  []string
		created map[string]time.Time // expected CreatedAt of accepted ids
		skip    []skipWant
		notices []string // informational fields ignored (job kept)
		err     string
	}{
		{file: "current_one_job.json", accept: []string{"pj_01HZX4"}, created: map[string]time.Time{"pj_01HZX4": june1}},
		{file: "legacy_seed_era.json", accept: []string{"c6a1e2f0-0b7e-4c1e-9a51-5d0b1f7f9e10"},
			created: map[string]time.Time{"c6a1e2f0-0b7e-4c1e-9a51-5d0b1f7f9e10": time.Date(2025, 6, 9, 23, 41, 44, 449775000, time.UTC)}},
		{file: "legacy_alt_dek_name.json", accept: []string{"job-alt"}},
		{file: "created_at_forms.json",
			accept: []string{"iso-z", "iso-naive", "iso-offset", "epoch-s", "epoch-ms", "epoch-string", "firestore", "firestore-rest", "rfc1123", "null", "absent"},
			created: map[string]time.Time{"iso-z": june1, "iso-naive": june1, "iso-offset": june1, "epoch-s": june1, "epoch-ms": june1,
				"epoch-string": june1, "firestore": june1, "firestore-rest": june1, "rfc1123": june1, "null": {}, "absent": {}}},
		{file: "numeric_ids.json", accept: []string{"10293"}},
		{file: "odd_entries.json", accept: []string{"good-1", "2"},
			created: map[string]time.Time{"good-1": june1.Add(500 * time.Millisecond), "2": june1.Add(123 * time.Millisecond)},
			skip: []skipWant{{"", "print_job_id"}, {"", ""}, {"", "print_job_id"}, {"", "print_job_id"}, {"bad-dek", "gcode_dek_encrypted_hex"},
				{"bad-url", "encrypted_gcode_download_url"}, {"bad-iv", "gcode_iv_hex"}}},
		{file: "informational_odd_types.json", accept: []string{"info-odd"},
			notices: []string{"purchase_id", "user_account_id", "printer_kek_id", "status", "created_at"}},
		{file: "no_url_null_fields.json", accept: []string{"no-url"}},
		{file: "empty.json"},
		{file: "null_jobs.json"},
		{file: "no_jobs_key.json"},
		{file: "jobs_is_object.json", err: "jobs is an object, not an array"},
		{file: "bare_array.json", err: "poll answer is not a JSON object"},
		{file: "html_error_page.html", err: "poll answer is not a JSON object"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			jobs, skipped, err := decodePollAnswer(corpus(t, "poll", tc.file))
			if failsAs(t, err, tc.err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, d := range jobs {
				ids = append(ids, d.job.ID)
				if want, ok := tc.created[d.job.ID]; ok {
					got := time.Time{}
					if d.job.CreatedAt != "" {
						if got, err = time.Parse(time.RFC3339Nano, d.job.CreatedAt); err != nil {
							t.Fatalf("%s: CreatedAt %q is not RFC 3339", d.job.ID, d.job.CreatedAt)
						}
					}
					if !got.Equal(want) {
						t.Errorf("%s: created %v, want %v", d.job.ID, got, want)
					}
				}
				if d.job.DEKPackage == "" || d.job.IVHex == "" {
					t.Errorf("%s: key material lost: %+v", d.job.ID, d.job)
				}
			}
			if !slices.Equal(ids, tc.accept) {
				t.Errorf("accepted %v, want %v", ids, tc.accept)
			}
			if len(skipped) != len(tc.skip) {
				t.Fatalf("skipped %+v, want %+v", skipped, tc.skip)
			}
			for i, s := range skipped {
				if s.ID != tc.skip[i].id || s.Field != tc.skip[i].field || s.Problem == "" {
					t.Errorf("skip %d: %+v, want id %q field %q", i, s, tc.skip[i].id, tc.skip[i].field)
				}
			}
			var fields []string
			for _, n := range noticesOf(jobs) {
				fields = append(fields, n.Field)
			}
			slices.Sort(fields)
			want := slices.Clone(tc.notices)
			slices.Sort(want)
			if !slices.Equal(fields, want) {
				t.Errorf("ignored fields %v, want %v", fields, want)
			}
		})
	}
}

// corpusServer answers every request with the corpus body of one endpoint.
func corpusServer(t *testing.T, body []byte) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func corpusClient(t *testing.T, base string, profile Profile, log *bytes.Buffer) *Client {
	t.Helper()
	c, err := New(Options{Profile: profile, BaseURL: base, CWSURL: base, StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failsAs reports whether the case expects an error (want != ""), failing t
// unless err contains want.
func failsAs(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want %q", err, want)
	}
	return true
}

// corpusAnswering is a client of a server that answers every request with
// the corpus file endpoint/file, and the client's log.
func corpusAnswering(t *testing.T, endpoint, file string, profile Profile) (*Client, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	return corpusClient(t, corpusServer(t, corpus(t, endpoint, file)), profile, &log), &log
}

// The log line of a skipped entry names its id and the field at fault.
func TestCorpusPollLogsSkippedEntries(t *testing.T) {
	c, log := corpusAnswering(t, "poll", "odd_entries.json", ProfileCurrent)
	if _, err := c.ImportToken(corpusJWT1, "prn-1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	jobs, err := c.Poll(context.Background())
	if err != nil || len(jobs) != 2 {
		t.Fatalf("poll: %v %v", jobs, err)
	}
	for _, want := range []string{
		`msg="marketplace: poll entry skipped" entry=5 id=bad-dek field=gcode_dek_encrypted_hex problem="is the number 12345, not a string"`,
		`msg="marketplace: poll entry skipped" entry=1 id="" field="" problem="entry is a string, not an object"`,
		`msg="marketplace: poll entry skipped" entry=3 id="" field=print_job_id problem=missing`,
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %s\nlog:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), "AAAAAAAA") {
		t.Errorf("the log shows key material:\n%s", log.String())
	}
}

const (
	corpusJWT1 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJwcmludGVyX2lkIjoicHJuLTEiLCJzdWIiOiJwcm4tMSIsImV4cCI6MTkyNDk5MjAwMCwiaWF0IjoxNzY3MjI1NjAwfQ.c2ln"
)

func TestCorpusPairStart(t *testing.T) {
	for _, tc := range []struct {
		file    string
		session string
		expires time.Time // zero: unknown (not an error)
		err     string
	}{
		{file: "rfc3339.json", session: "sess_1", expires: time.Date(2026, 12, 1, 8, 10, 0, 0, time.UTC)},
		{file: "naive_minutes.json", session: "sess_1", expires: time.Date(2026, 12, 1, 8, 10, 0, 0, time.UTC)},
		{file: "rfc1123.json", session: "sess_1", expires: time.Date(2026, 12, 1, 8, 10, 0, 0, time.UTC)},
		{file: "date_only.json", session: "sess_1", expires: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)},
		{file: "unparseable.json", session: "sess_1"},
		{file: "numeric_session_null_expiry.json", session: "4711"},
		{file: "no_code.json", err: "lacks session_id or pairing_code"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, log := corpusAnswering(t, "pair_start", tc.file, ProfileCurrent)
			s, err := c.PairStart(context.Background(), corpusPub, PrinterInfo{Name: "p"})
			if failsAs(t, err, tc.err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.SessionID != tc.session || s.Code != "K7M2QX" || !s.ExpiresAt.Equal(tc.expires) {
				t.Fatalf("session %+v, want %s expiring %v", s, tc.session, tc.expires)
			}
			if tc.file == "unparseable.json" && !strings.Contains(log.String(), "expires_at not understood") {
				t.Errorf("no log line for the unreadable expiry:\n%s", log.String())
			}
		})
	}
}

func TestCorpusPairComplete(t *testing.T) {
	for _, tc := range []struct {
		file    string
		printer string
		expiry  time.Time     // exact, or
		within  time.Duration // expiry ≈ now + within (assumed lifetime)
		err     string
	}{
		// The JWT's exp wins over any answer field.
		{file: "date_only.json", printer: "prn-1", expiry: jwtExp},
		{file: "naive.json", printer: "prn-1", expiry: jwtExp},
		{file: "rfc1123_expiry_field.json", printer: "prn-1", expiry: jwtExp},
		// No exp in the JWT: the answer's expiry in any form ...
		{file: "no_jwt_exp_date_only.json", printer: "prn-2", expiry: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)},
		// ... and when it cannot be read or is missing, the shortest sane
		// lifetime (renewed at once), never an aborted pairing.
		{file: "no_jwt_exp_unparseable.json", printer: "prn-2", within: unknownExpiryLifetime},
		{file: "no_expiry_at_all.json", printer: "prn-2", within: unknownExpiryLifetime},
		{file: "no_token.json", err: "empty token"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, _ := corpusAnswering(t, "pair_complete", tc.file, ProfileCurrent)
			tok, err := c.PairComplete(context.Background(), "sess_1", nil)
			if failsAs(t, err, tc.err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.PrinterID != tc.printer {
				t.Errorf("printer %q, want %q", tok.PrinterID, tc.printer)
			}
			if tc.within > 0 {
				if d := time.Until(tok.Expiry); d > tc.within || d < tc.within-time.Minute {
					t.Errorf("expiry in %v, want about %v", d, tc.within)
				}
			} else if !tok.Expiry.Equal(tc.expiry) {
				t.Errorf("expiry %v, want %v", tok.Expiry, tc.expiry)
			}
		})
	}
}

func TestCorpusRegisterRefreshJobDetails(t *testing.T) {
	ctx := context.Background()
	t.Run("register/seed_readme", func(t *testing.T) {
		c, _ := corpusAnswering(t, "register", "seed_readme.json", ProfileLegacy)
		reg, err := c.RegisterPrinter(ctx, "user-jwt", corpusPub, PrinterInfo{Name: "My Printer"})
		if err != nil {
			t.Fatal(err)
		}
		// The JWT has no exp: the answer's token_expires (".357Z") counts.
		if reg.Token.PrinterID != "prn-2" || !reg.Token.Expiry.Equal(time.Date(2025, 7, 10, 6, 18, 50, 357000000, time.UTC)) || reg.KEKID != "encrypted-key-data" {
			t.Fatalf("registration %+v", reg)
		}
	})
	t.Run("register/numeric_ids_no_expiry", func(t *testing.T) {
		c, _ := corpusAnswering(t, "register", "numeric_ids_no_expiry.json", ProfileLegacy)
		reg, err := c.RegisterPrinter(ctx, "user-jwt", corpusPub, PrinterInfo{Name: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if reg.UserID != "3" || time.Until(reg.Token.Expiry) < 29*24*time.Hour {
			t.Fatalf("registration %+v (legacy tokens without expiry last 30 days)", reg)
		}
	})
	for _, tc := range []struct {
		file    string
		profile Profile
	}{{"current.json", ProfileCurrent}, {"legacy_alt_names.json", ProfileLegacy}, {"date_only.json", ProfileCurrent}} {
		t.Run("refresh/"+tc.file, func(t *testing.T) {
			c, _ := corpusAnswering(t, "refresh", tc.file, tc.profile)
			if _, err := c.ImportToken(corpusJWT1, "prn-1", time.Time{}); err != nil {
				t.Fatal(err)
			}
			tok, err := c.Refresh(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !tok.Expiry.Equal(jwtExp) {
				t.Fatalf("refreshed expiry %v, want the JWT's %v", tok.Expiry, jwtExp)
			}
		})
	}
	for file, want := range map[string]string{"gcode_file_url.json": "https://storage.googleapis.com/lmnt/pj_1.enc?sig=1", "null_url.json": ""} {
		t.Run("job_details/"+file, func(t *testing.T) {
			c, _ := corpusAnswering(t, "job_details", file, ProfileCurrent)
			if _, err := c.ImportToken(corpusJWT1, "prn-1", time.Time{}); err != nil {
				t.Fatal(err)
			}
			got, err := c.JobFileURL(ctx, "pj_1")
			if want == "" {
				failsAs(t, err, "lacks gcode_file_url")
				return
			}
			if err != nil || got != want {
				t.Fatalf("%q %v", got, err)
			}
		})
	}
}

func TestCorpusPairStatusAndLogin(t *testing.T) {
	ctx := context.Background()
	for file, want := range map[string]struct {
		status   string
		approved bool
		err      string
	}{
		"pending.json":          {status: "pending"},
		"approved.json":         {status: "approved", approved: true},
		"ready_upper.json":      {status: "ready", approved: true},
		"authorized_extra.json": {status: "authorized", approved: true},
		"expired.json":          {status: "expired", err: "expired"},
		"no_status.json":        {err: "lacks status"},
	} {
		t.Run("pair_status/"+file, func(t *testing.T) {
			c, _ := corpusAnswering(t, "pair_status", file, ProfileCurrent)
			st, ok, err := c.PairStatus(ctx, "sess_1")
			if failsAs(t, err, want.err) {
				return
			}
			if err != nil || st != want.status || ok != want.approved {
				t.Fatalf("%q %v %v", st, ok, err)
			}
		})
	}
	for file, want := range map[string]string{"seed_readme.json": "eyJ.user.jwt", "nested_user.json": "eyJ.user.jwt", "no_token.json": ""} {
		t.Run("user_login/"+file, func(t *testing.T) {
			c, _ := corpusAnswering(t, "user_login", file, ProfileLegacy)
			tok, err := c.UserLogin(ctx, "user@example.com", "pw")
			if want == "" {
				failsAs(t, err, "lacks token")
				return
			}
			if err != nil || tok != want {
				t.Fatalf("%q %v", tok, err)
			}
		})
	}
}

// api_profile "auto": one unauthenticated GET of the current poll path.
func TestProbeProfile(t *testing.T) {
	for status, want := range map[int]Profile{404: ProfileLegacy, 401: ProfileCurrent, 403: ProfileCurrent, 200: ProfileCurrent, 503: "", 429: ""} {
		var sawAuth bool
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawAuth = r.Header.Get("Authorization") != ""
			if r.URL.Path != "/api/printer-agent/poll-print-queue" {
				t.Errorf("probed %s", r.URL.Path)
			}
			w.WriteHeader(status)
		}))
		var log bytes.Buffer
		c := corpusClient(t, srv.URL, ProfileCurrent, &log)
		if _, err := c.ImportToken(corpusJWT1, "prn-1", time.Time{}); err != nil {
			t.Fatal(err)
		}
		got, why, err := c.ProbeProfile(context.Background())
		srv.Close()
		if got != want || (want == "") != (err != nil) || (err == nil && why == "") || sawAuth {
			t.Errorf("HTTP %d: %q %q %v (token sent: %v), want %q", status, got, why, err, sawAuth, want)
		}
	}
}

// A bad entry that stays in the queue warns once, not at every poll.
func TestSkippedEntryWarnsOnce(t *testing.T) {
	c, log := corpusAnswering(t, "poll", "odd_entries.json", ProfileCurrent)
	if _, err := c.ImportToken(corpusJWT1, "prn-1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	p := c.NewPoller(PollerOptions{})
	for i := 0; i < 3; i++ {
		if _, err := p.PollOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(log.String(), `level=WARN msg="marketplace: poll entry skipped" entry=5 id=bad-dek`); n != 1 {
		t.Errorf("the bad-dek entry warned %d times in 3 polls, want 1:\n%s", n, log.String())
	}
}

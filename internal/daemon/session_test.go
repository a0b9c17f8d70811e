package daemon_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// recorder keeps every API answer of a session for the secret scan.
type recorder struct {
	d   *daemontest.Daemon
	mu  sync.Mutex
	all []daemontest.Response
	url []string
}

func (r *recorder) call(method, path string, body any) daemontest.Response {
	r.d.T.Helper()
	resp := r.d.Call(method, path, body)
	r.note(path, resp)
	return resp
}

func (r *recorder) note(path string, resp daemontest.Response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, resp)
	r.url = append(r.url, path)
}

func (r *recorder) must(method, path string, body any, want int) daemontest.Response {
	r.d.T.Helper()
	resp := r.call(method, path, body)
	if resp.Status != want {
		r.d.T.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.Status, want, resp.Body)
	}
	return resp
}

func cubeGcode(t *testing.T) []byte {
	t.Helper()
	for _, f := range testutil.Fixtures(t) {
		if f.Name == "prusaslicer_cube20_pla_0.20mm" {
			return f.Bytes(t)
		}
	}
	t.Fatal("the PrusaSlicer cube fixture is missing")
	return nil
}

// queueAsMarketplaceSends polls the simulator with the printer's token and
// returns the job's secret fields as the wire carries them.
func queueAsMarketplaceSends(t *testing.T, sim *marketsim.Server, token, jobID string) (url, dek, iv string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	req, _ := http.NewRequest(http.MethodGet, sim.URL()+"/api/printer-agent/poll-print-queue", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var q struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
		t.Fatal(err)
	}
	for _, j := range q.Jobs {
		if j["print_job_id"] == jobID {
			return fmt.Sprint(j["encrypted_gcode_download_url"]), fmt.Sprint(j["gcode_dek_encrypted_hex"]), fmt.Sprint(j["gcode_iv_hex"])
		}
	}
	t.Fatalf("job %s not in the queue", jobID)
	return
}

func storedToken(t *testing.T, stateDir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "marketplace-token.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Token string `json:"printer_token"`
	}
	if err := json.Unmarshal(data, &f); err != nil || f.Token == "" {
		t.Fatalf("token file unreadable: %v", err)
	}
	return f.Token
}

// waitJob waits (10 s at most) until job id has finished and returns it.
func waitJob(t *testing.T, d *daemontest.Daemon, id string) apitype.JobInfo {
	t.Helper()
	return waitJobWithin(t, d, id, 10*time.Second)
}

// waitJobWithin is waitJob with another deadline (jobs that print one
// after the other need longer).
func waitJobWithin(t *testing.T, d *daemontest.Daemon, id string, within time.Duration) apitype.JobInfo {
	t.Helper()
	var found apitype.JobInfo
	d.WaitWithin(within, "job "+id+" to finish", func() bool {
		var s apitype.Snapshot
		d.Call(http.MethodGet, "/lmnt/v1/jobs", nil).JSON(t, &s)
		for _, j := range s.Finished {
			if j.ID == id {
				found = j
				return true
			}
		}
		return false
	})
	return found
}

// TestSessionEndpointsAndNoSecrets drives every endpoint through a whole
// session (pairing, a marketplace job, two local jobs, token refresh,
// health checks, the page) and then scans every answer for the secrets of
// the session: the printer token, the download URL, the DEK packages, the
// IVs and the Fernet key.
// internetAsset matches what would make a browser load something from
// outside the printer (a link to the marketplace is not loaded).
var internetAsset = regexp.MustCompile(`(?i)(src|srcset|href|url)\s*[=(]\s*["']?(https?:)?//`)

func TestSessionEndpointsAndNoSecrets(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{StandinSpeed: 4 << 20})
	rec := &recorder{d: d}
	gcode := cubeGcode(t)
	sum := sha256.Sum256(gcode)
	wantSum := hex.EncodeToString(sum[:])

	// Before pairing.
	var st apitype.Status
	rec.must(http.MethodGet, "/lmnt/v1/status", nil, 200).JSON(t, &st)
	if !strings.HasPrefix(st.Summary, "not paired: run lmnt pair") || st.Key.State != "ok" {
		t.Fatalf("fresh daemon: summary %q, key %q", st.Summary, st.Key.State)
	}
	rec.must(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil, http.StatusConflict)

	// Two concurrent pairing requests share one session.
	var wg sync.WaitGroup
	codes := make([]string, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := []string{"/machine/lmnt_marketplace/pair/start", "/machine/lmnt_marketplace/start_pairing"}[i]
			resp := d.Call(http.MethodPost, path, map[string]any{"printer_name": "Session printer", "manufacturer": "LMNT", "model": "Test"})
			rec.note(path, resp)
			var p apitype.Pairing
			if resp.Status == 200 && json.Unmarshal(resp.Body, &p) == nil {
				codes[i] = p.PairingCode
			}
		}()
	}
	wg.Wait()
	if codes[0] == "" || codes[0] != codes[1] {
		t.Fatalf("concurrent pairing requests got codes %q and %q, want one session", codes[0], codes[1])
	}
	if n := len(d.Sim.Pairings()); n != 1 {
		t.Fatalf("the marketplace saw %d pairing sessions, want 1", n)
	}
	var p apitype.Pairing
	rec.must(http.MethodGet, "/machine/lmnt_marketplace/pair/status", nil, 200).JSON(t, &p)
	if p.Status != "pending" || p.PairingCode != codes[0] {
		t.Fatalf("pair/status before approval: %+v", p)
	}
	if r := rec.call(http.MethodPost, "/machine/lmnt_marketplace/pair/complete", nil); r.Status != http.StatusConflict {
		t.Fatalf("pair/complete before approval: %d %s", r.Status, r.Body)
	}
	page := rec.must(http.MethodGet, "/machine/lmnt_marketplace/ui", nil, 200)
	if !bytes.Contains(page.Body, []byte(codes[0])) || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(page.Header.Get("Content-Security-Policy"), "default-src 'none'") || internetAsset.Match(page.Body) {
		t.Fatalf("pairing page: code missing, or internet assets, or no CSP:\n%s", page.Body)
	}
	printerID, err := d.Sim.ApprovePairing(codes[0], "")
	if err != nil {
		t.Fatal(err)
	}
	d.WaitFor("paired", func() bool {
		rec.must(http.MethodGet, "/machine/lmnt_marketplace/pair/status", nil, 200).JSON(t, &p)
		return p.Status == "paired"
	})
	if p.PrinterID != printerID {
		t.Fatalf("paired as %q, the marketplace made %q", p.PrinterID, printerID)
	}
	rec.must(http.MethodPost, "/machine/lmnt_marketplace/pair/complete", nil, 200)
	if r := rec.call(http.MethodPost, "/machine/lmnt_marketplace/pair/start", nil); r.Status != http.StatusConflict {
		t.Fatalf("pairing again without force: %d %s", r.Status, r.Body)
	}
	token := storedToken(t, d.StateDir)

	// The original plugin's status shape.
	var ps struct {
		Auth struct {
			Authenticated bool   `json:"authenticated"`
			PrinterID     string `json:"printer_id"`
			TokenExpiry   string `json:"token_expiry"`
		} `json:"auth"`
		Jobs struct {
			CurrentJob  any  `json:"current_job"`
			QueueLength *int `json:"queue_length"`
			JobStarted  bool `json:"job_started"`
		} `json:"jobs"`
		Version string `json:"version"`
	}
	rec.must(http.MethodGet, "/machine/lmnt_marketplace/status", nil, 200).JSON(t, &ps)
	if !ps.Auth.Authenticated || ps.Auth.PrinterID != printerID || ps.Auth.TokenExpiry == "" || ps.Jobs.QueueLength == nil || ps.Version == "" {
		t.Fatalf("plugin status shape: %+v", ps)
	}
	var rr struct{ Status, PrinterID, Expiry string }
	rec.must(http.MethodPost, "/machine/lmnt_marketplace/refresh_token", nil, 200)
	r := rec.must(http.MethodPost, "/machine/lmnt_marketplace/refresh_token", nil, 200)
	if err := json.Unmarshal(r.Body, &rr); err != nil || rr.Status != "success" {
		t.Fatalf("refresh_token: %s", r.Body)
	}
	newToken := storedToken(t, d.StateDir)

	// A marketplace job.
	rec.must(http.MethodPost, "/lmnt/v1/ready", nil, 200)
	job, err := d.Sim.CreateJob(printerID, gcode, marketsim.JobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dlURL, dek, iv := queueAsMarketplaceSends(t, d.Sim, newToken, job.ID)
	var cj struct {
		Status    string            `json:"status"`
		JobStatus apitype.JobStatus `json:"job_status"`
	}
	rec.must(http.MethodPost, "/machine/lmnt_marketplace/check_jobs", nil, 200).JSON(t, &cj)
	if cj.Status != "success" || cj.JobStatus.LastCheck == nil {
		t.Fatalf("check_jobs: %+v", cj)
	}
	if j := waitJob(t, d, job.ID); j.State != apitype.JobSucceeded {
		t.Fatalf("marketplace job ended %s: %s\n%s", j.State, j.Message, d.Log.String())
	}
	assertPrinted(t, d, job.ID, wantSum, len(gcode))

	// A local job encrypted with a Fernet key, as a raw body.
	rec.must(http.MethodPost, "/lmnt/v1/ready", nil, 200)
	fkey, ftoken := fernetEncrypt(t, gcode)
	hdr := http.Header{"Content-Type": {"application/octet-stream"}, "X-Fernet-Key": {fkey}}
	resp := daemontest.Do(t, d.Client, http.MethodPost, "http://lmntd/server/encrypted/print?filename=cube.gcode", []byte(ftoken), hdr)
	rec.note("/server/encrypted/print", resp)
	var sp struct {
		JobID string `json:"job_id"`
	}
	resp.JSON(t, &sp)
	if resp.Status != 200 || sp.JobID == "" {
		t.Fatalf("start_print (Fernet): %d %s", resp.Status, resp.Body)
	}
	if j := waitJob(t, d, sp.JobID); j.State != apitype.JobSucceeded {
		t.Fatalf("local Fernet job ended %s: %s", j.State, j.Message)
	}
	assertPrinted(t, d, sp.JobID, wantSum, len(gcode))

	// A local job with a DEK package sealed to this printer, as multipart.
	rec.must(http.MethodPost, "/lmnt/v1/ready", nil, 200)
	var keys apitype.KeysInfo
	rec.must(http.MethodGet, "/lmnt/v1/keys", nil, 200).JSON(t, &keys)
	localDEK, localIV, ct := dekEncrypt(t, keys.PublicKey, gcode)
	body, hdr := multipartUpload(t, "cube.gcode.enc", ct, "gcode_dek_package", localDEK, "gcode_iv_hex", localIV)
	resp = daemontest.Do(t, d.Client, http.MethodPost, "http://lmntd/machine/encrypted_print/start_print", body, hdr)
	rec.note("/machine/encrypted_print/start_print", resp)
	resp.JSON(t, &sp)
	if resp.Status != 200 {
		t.Fatalf("start_print (DEK): %d %s", resp.Status, resp.Body)
	}
	if j := waitJob(t, d, sp.JobID); j.State != apitype.JobSucceeded {
		t.Fatalf("local DEK job ended %s: %s", j.State, j.Message)
	}
	assertPrinted(t, d, sp.JobID, wantSum, len(gcode))

	// The rest of the endpoints.
	var s apitype.Snapshot
	rec.must(http.MethodGet, "/lmnt/v1/jobs", nil, 200).JSON(t, &s)
	if len(s.Finished) != 3 {
		t.Fatalf("jobs: %d finished, want 3", len(s.Finished))
	}
	rec.must(http.MethodPost, "/lmnt/v1/jobs/cancel", map[string]string{"id": "no-such-job"}, 404)
	rec.must(http.MethodPost, "/lmnt/v1/jobs/cancel", map[string]string{"id": job.ID}, 409)
	rec.must(http.MethodGet, "/lmnt/v1/status", nil, 200).JSON(t, &st)
	if st.Summary != "paired as Session printer; Klipper ready; idle" || st.Health != "ok" {
		t.Fatalf("status after the jobs: %q (%s)", st.Summary, st.Health)
	}
	var doc apitype.DoctorReport
	rec.must(http.MethodGet, "/lmnt/v1/doctor?offline=1", nil, 200).JSON(t, &doc)
	if doc.Health != apitype.HealthOK {
		t.Fatalf("doctor --offline: %+v", doc)
	}
	rec.must(http.MethodGet, "/lmnt/v1/doctor", nil, 200).JSON(t, &doc)
	if doc.Health != apitype.HealthOK || checkResult(doc, "marketplace") != apitype.CheckOK {
		t.Fatalf("doctor: %+v", doc)
	}
	rec.must(http.MethodGet, "/lmnt/v1/doctor?offline=maybe", nil, 400)
	rec.must(http.MethodPost, "/machine/lmnt_marketplace/ready", nil, 200)
	history := d.Sim.StatusHistory(job.ID)
	d.WaitFor("the success report", func() bool {
		history = d.Sim.StatusHistory(job.ID)
		return len(history) > 0 && history[len(history)-1].Status == "success"
	})

	// The scan.
	secrets := map[string]string{"printer token": token, "refreshed printer token": newToken, "download URL": dlURL,
		"DEK package": dek, "IV": iv, "local DEK package": localDEK, "local IV": localIV, "Fernet key": fkey}
	if u := strings.SplitN(dlURL, "?", 2); len(u) == 2 {
		secrets["download URL query"] = u[1]
	}
	for i, resp := range rec.all {
		for what, secret := range secrets {
			if secret == "" || len(secret) < 8 {
				t.Fatalf("secret %s not captured", what)
			}
			if bytes.Contains(resp.Body, []byte(secret)) || strings.Contains(fmt.Sprint(resp.Header), secret) {
				t.Errorf("answer of %s contains the %s", rec.url[i], what)
			}
		}
	}
	t.Logf("scanned %d answers for %d secrets", len(rec.all), len(secrets))
}

func checkResult(r apitype.DoctorReport, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Result
		}
	}
	return ""
}

func assertPrinted(t *testing.T, d *daemontest.Daemon, jobID, wantSum string, size int) {
	t.Helper()
	for _, p := range d.Standin.Prints() {
		if p.JobID == jobID {
			if p.SHA256 != wantSum || p.BytesRead != int64(size) {
				t.Fatalf("Klipper read %d bytes %s for %s, want %d bytes %s", p.BytesRead, p.SHA256, jobID, size, wantSum)
			}
			return
		}
	}
	t.Fatalf("Klipper never printed %s", jobID)
}

// fernetEncrypt makes a Fernet token (spec: version 0x80, timestamp, IV,
// AES-128-CBC, HMAC-SHA256) with a fresh key.
func fernetEncrypt(t *testing.T, plain []byte) (key, token string) {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	ivb := make([]byte, 16)
	rand.Read(ivb)
	block, _ := aes.NewCipher(k[16:])
	ct := cbcEncrypt(block, ivb, plain)
	msg := []byte{0x80}
	msg = binary.BigEndian.AppendUint64(msg, uint64(time.Now().Unix()))
	msg = append(append(msg, ivb...), ct...)
	mac := hmac.New(sha256.New, k[:16])
	mac.Write(msg)
	msg = mac.Sum(msg)
	return base64.URLEncoding.EncodeToString(k), base64.URLEncoding.EncodeToString(msg)
}

// multipartUpload is a start_print form: fields (name, value, name,
// value …) in order, then the file.
func multipartUpload(t *testing.T, file string, content []byte, fields ...string) ([]byte, http.Header) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := mw.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile("file", file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return body.Bytes(), http.Header{"Content-Type": {mw.FormDataContentType()}}
}

// dekEncrypt encrypts plain for the printer as the marketplace does: a
// random DEK in a NaCl box to the printer's key, AES-256-CBC with an IV.
func dekEncrypt(t *testing.T, printerPub64 string, plain []byte) (pkg, ivHex string, ct []byte) {
	t.Helper()
	pubRaw, err := base64.StdEncoding.DecodeString(printerPub64)
	if err != nil || len(pubRaw) != 32 {
		t.Fatalf("printer public key %q", printerPub64)
	}
	var pub [32]byte
	copy(pub[:], pubRaw)
	ephPub, ephPriv, _ := box.GenerateKey(rand.Reader)
	var n [24]byte
	rand.Read(n[:])
	dek := make([]byte, 32)
	rand.Read(dek)
	sealed := box.Seal(nil, dek, &n, &pub, ephPriv)
	pkg = base64.StdEncoding.EncodeToString(ephPub[:]) + ":" + base64.StdEncoding.EncodeToString(n[:]) + ":" + base64.StdEncoding.EncodeToString(sealed)
	ivb := make([]byte, 16)
	rand.Read(ivb)
	block, _ := aes.NewCipher(dek)
	return pkg, hex.EncodeToString(ivb), cbcEncrypt(block, ivb, plain)
}

func cbcEncrypt(block cipher.Block, iv, plain []byte) []byte {
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := append(append([]byte(nil), plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	return buf
}

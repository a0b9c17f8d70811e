package daemon_test

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/daemon"
	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
)

// TestImportLegacyKeyAndToken: lmnt keys import-legacy takes over the old
// plugin's key and token (the pairing is kept), removes the clear-text
// files on request, and a job sealed to the old key prints.
func TestImportLegacyKeyAndToken(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	var want struct {
		DEKHex     string `json:"dek_hex"`
		DEKPackage string `json:"dek_package"`
		Expected   struct {
			KeyID string `json:"key_id"`
		} `json:"expected"`
	}
	caseDir := filepath.Join("..", "identity", "testdata", "legacy", "hex")
	data, err := os.ReadFile(filepath.Join(caseDir, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.Dir, "printer_data", "lmnt_marketplace")
	keyFile := filepath.Join(dir, "tokens", "printer_dlt_private_key.hex")
	src, err := os.ReadFile(filepath.Join(caseDir, "printer_data", "lmnt_marketplace", "tokens", "printer_dlt_private_key.hex"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(keyFile), 0o700)
	if err := os.WriteFile(keyFile, src, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"printer_id": "prn-legacy-1", "iat": now.Unix(), "exp": now.Add(20 * 24 * time.Hour).Unix()})
	jwt := "eyJhbGciOiJIUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
	tokFile := filepath.Join(dir, "tokens", "printer_token.json")
	tok, _ := json.Marshal(map[string]any{"printer_token": jwt, "token_expires": nil, "created_at": now.Format("2006-01-02T15:04:05.000000"),
		"printer_name": "Old plugin printer", "printer_id": "prn-legacy-1"})
	if err := os.WriteFile(tokFile, tok, 0o600); err != nil {
		t.Fatal(err)
	}

	// The default directory is printer_data/lmnt_marketplace next to printer.cfg's printer_data.
	r := d.Call("POST", "/lmnt/v1/keys/import-legacy", map[string]any{"remove_source": true})
	var res apitype.ImportLegacyResult
	r.JSON(t, &res)
	if r.Status != 200 || res.KeyID != want.Expected.KeyID || !res.TokenImported || res.PrinterID != "prn-legacy-1" || len(res.Removed) != 2 {
		t.Fatalf("import-legacy: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), jwt) {
		t.Fatal("the answer contains the token")
	}
	for _, f := range []string{keyFile, tokFile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", f, err)
		}
	}
	var st apitype.Status
	d.Call("GET", "/lmnt/v1/status", nil).JSON(t, &st)
	// (The simulator never issued this token, so the marketplace loops soon
	// declare the pairing lost; the import itself is what is checked here.)
	if st.Auth.PrinterID != "prn-legacy-1" || st.Key.KeyID != want.Expected.KeyID || st.Printer.Name != "Old plugin printer" {
		t.Fatalf("status after the import: %+v", st)
	}
	if r := d.Call("POST", "/lmnt/v1/keys/import-legacy", nil); r.Status != 404 {
		t.Fatalf("second import: %d %s", r.Status, r.Body)
	}

	// A job sealed to the old key prints.
	gcode := cubeGcode(t)
	dek, _ := hex.DecodeString(want.DEKHex)
	iv := make([]byte, 16)
	rand.Read(iv)
	block, _ := aes.NewCipher(dek)
	ct := cbcEncrypt(block, iv, gcode)
	body, hdr := multipartUpload(t, "old.gcode.enc", ct, "dek_package", want.DEKPackage, "iv", hex.EncodeToString(iv))
	resp := daemontest.Do(t, d.Client, "POST", "http://lmntd/machine/encrypted_print/start_print", body, hdr)
	var sp struct {
		JobID string `json:"job_id"`
	}
	resp.JSON(t, &sp)
	if j := waitJob(t, d, sp.JobID); j.State != apitype.JobSucceeded {
		t.Fatalf("job sealed to the imported key: %s %s", j.State, j.Message)
	}
	sum := sha256.Sum256(gcode)
	assertPrinted(t, d, sp.JobID, hex.EncodeToString(sum[:]), len(gcode))
}

// TestBadConfigExits: a configuration error stops lmntd with status 1 and
// a message that names the file and the key.
func TestBadConfigExits(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "lmntd.toml")
	os.WriteFile(cfg, []byte("[marketplace]\ncheck_interval = \"1ms\"\nurl = \"http://example.com\"\n"), 0o644)
	var out, errb bytes.Buffer
	code := daemon.Main([]string{"--config", cfg}, &out, &errb)
	msg := errb.String()
	if code != 1 || !strings.Contains(msg, cfg) || !strings.Contains(msg, "marketplace.check_interval") || !strings.Contains(msg, "marketplace.url") {
		t.Fatalf("exit %d, message:\n%s", code, msg)
	}
	if code := daemon.Main([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "lmntd ") {
		t.Fatalf("--version: %d %q", code, out.String())
	}
	out.Reset()
	if code := daemon.Main([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--marketplace-check-interval") {
		t.Fatalf("--help: %d %s", code, out.String())
	}
	if code := daemon.Main([]string{"stray"}, &out, &errb); code != 2 {
		t.Fatalf("stray argument: exit %d", code)
	}
}

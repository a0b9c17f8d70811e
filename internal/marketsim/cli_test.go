package marketsim

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"crypto/rand"
	"golang.org/x/crypto/nacl/box"
)

func TestHelpExplainsUse(t *testing.T) {
	var out bytes.Buffer
	if code := Main([]string{"--help"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"serve", "create-job", "approve", "tls_ca_file", "curl", "--auto-approve"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	var errOut bytes.Buffer
	if code := Main([]string{"frobnicate"}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "unknown command") {
		t.Fatalf("unknown command: exit %d, %q", code, errOut.String())
	}
}

// The admin commands drive a running simulator end to end: a printer starts
// pairing over HTTPS, the CLI approves it, queues a G-code file, injects and
// clears a fault, and reads the status history.
func TestAdminCommands(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := []string{"--admin", s.AdminURL()}
	run := func(stdin string, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := Main(append(args, admin...), strings.NewReader(stdin), &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	run("secret\n", "add-user", "owner@example.com")

	pub, _, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub[:])
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}}
	body, _ := json.Marshal(map[string]any{
		"public_key": base64.StdEncoding.EncodeToString(pub[:]), "key_type": "x25519", "key_id": hex.EncodeToString(sum[:]),
		"printer": map[string]any{"name": "bench", "manufacturer": "Creality", "model": "Ender 3", "extruder_count": 1},
	})
	resp, err := hc.Post(s.URL()+"/api/printers/pair/start", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		Code string `json:"pairing_code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&started); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pair/start: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	var approved struct {
		PrinterID string `json:"printer_id"`
	}
	if err := json.Unmarshal([]byte(run("", "approve", started.Code, "--email", "owner@example.com")), &approved); err != nil || approved.PrinterID == "" {
		t.Fatalf("approve: %v", err)
	}
	gcodePath := filepath.Join(t.TempDir(), "part.gcode")
	if err := os.WriteFile(gcodePath, []byte("G28\nG1 X1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var job JobInfo
	if err := json.Unmarshal([]byte(run("", "create-job", gcodePath, "--download", "storage")), &job); err != nil {
		t.Fatal(err)
	}
	if job.PrinterID != approved.PrinterID || job.CiphertextSize != 16 || job.Download != DownloadStorage {
		t.Fatalf("job %+v", job)
	}
	run("", "fault", "poll", "--status", "503", "--count", "2")
	s.mu.Lock()
	f := *s.faults[CallPoll]
	s.mu.Unlock()
	if f.Status != 503 || f.Count != 2 {
		t.Fatalf("fault %+v", f)
	}
	run("", "fault", "--clear")
	s.mu.Lock()
	left := len(s.faults)
	s.mu.Unlock()
	if s.Calls(CallPoll) != 0 || left != 0 {
		t.Fatal("faults not cleared")
	}
	if out := run("", "status", job.ID); !strings.Contains(out, `"history": []`) {
		t.Fatalf("status: %s", out)
	}
	if out := run("", "state"); !strings.Contains(out, approved.PrinterID) || !strings.Contains(out, s.URL()) {
		t.Fatalf("state: %s", out)
	}
	var errOut bytes.Buffer
	if code := Main(append([]string{"approve", "NOPE99"}, admin...), nil, &bytes.Buffer{}, &errOut); code != 1 || !strings.Contains(errOut.String(), "404") {
		t.Fatalf("unknown code: exit %d %q", code, errOut.String())
	}
}

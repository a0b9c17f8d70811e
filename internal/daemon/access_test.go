package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func errorOf(t *testing.T, r daemontest.Response) (code, message string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("status %d without a JSON error: %s", r.Status, r.Body)
	}
	return e.Error.Code, e.Error.Message
}

// TestErrorAnswers: wrong paths, methods, bodies and sizes get the right
// status and a JSON message; the pairing calls are rate-limited.
func TestErrorAnswers(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, PairingBurst: 3, PairingEvery: time.Hour})
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		inMessage    string
	}{
		{"GET", "/machine/lmnt_marketplace/nope", nil, 404, "no endpoint"},
		{"GET", "/", nil, 404, "no endpoint"},
		{"GET", "/machine/lmnt_marketplace/pair/start", nil, 405, "use POST"},
		{"DELETE", "/lmnt/v1/status", nil, 405, "not allowed"},
		{"POST", "/lmnt/v1/keys/reseal", map[string]string{"to": "floppy"}, 400, "tpm or software"},
		{"POST", "/lmnt/v1/keys/reseal", []byte(`{"to":`), 400, "invalid JSON"},
		{"POST", "/lmnt/v1/jobs/cancel", map[string]string{"idd": "x"}, 400, "unknown field"},
		{"POST", "/lmnt/v1/jobs/cancel", map[string]string{}, 400, "id is required"},
		{"POST", "/lmnt/v1/restart", map[string]bool{"when_idle": false}, 400, "when_idle"},
		{"POST", "/machine/encrypted_print/start_print", []byte{}, 400, "empty"},
		{"POST", "/machine/lmnt_marketplace/register_printer", map[string]string{"printer_name": "x"}, 400, "user_token"},
		{"POST", "/machine/lmnt_marketplace/check_jobs", nil, 409, "not paired"},
		{"POST", "/machine/lmnt_marketplace/refresh_token", nil, 409, "not paired"},
		{"POST", "/machine/lmnt_marketplace/pair/start", map[string]any{"extruder_count": 9}, 400, "extruder_count"},
	} {
		r := d.Call(c.method, c.path, c.body)
		if r.Status != c.status {
			t.Errorf("%s %s: status %d, want %d: %s", c.method, c.path, r.Status, c.status, r.Body)
			continue
		}
		if _, msg := errorOf(t, r); !strings.Contains(msg, c.inMessage) {
			t.Errorf("%s %s: message %q lacks %q", c.method, c.path, msg, c.inMessage)
		}
	}
	if r := d.Call("GET", "/machine/lmnt_marketplace/pair/start", nil); r.Header.Get("Allow") != "POST" {
		t.Errorf("405 without Allow: POST: %v", r.Header)
	}

	// 413: an upload announced over limits.max_download_size, and a JSON
	// body over 64 KiB.
	conn, err := net.Dial("unix", d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /machine/encrypted_print/start_print HTTP/1.1\r\nHost: lmntd\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", int64(1)<<40)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	conn.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("1 TiB upload: status %d, want 413", resp.StatusCode)
	}
	big := []byte(`{"id":"` + strings.Repeat("x", 70<<10) + `"}`)
	if r := d.Call("POST", "/lmnt/v1/jobs/cancel", big); r.Status != 413 {
		t.Errorf("70 KiB JSON body: status %d, want 413", r.Status)
	}

	// 429 after the burst of pairing/login calls.
	statuses := []int{}
	for range 4 {
		r := d.Call("POST", "/machine/lmnt_marketplace/user_login", map[string]string{"username": "a@b.c", "password": "x"})
		statuses = append(statuses, r.Status)
	}
	if statuses[3] != http.StatusTooManyRequests {
		t.Fatalf("login statuses %v: the 4th should be 429", statuses)
	}
	r := d.Call("POST", "/machine/lmnt_marketplace/pair/start", nil)
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("pair/start over the limit: %d %s", r.Status, r.Body)
	}
	errorOf(t, r)
}

// TestTCPAccess: on the TCP listener, a client that is neither in
// trusted_clients nor presents the API key cannot pair; the key admits; a
// trusted network admits; X-Forwarded-For never counts on TCP.
func TestTCPAccess(t *testing.T) {
	addr := testutil.FreePort(t)
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, HTTPListen: addr, APIKey: "k3y-for-the-lan",
		TrustedClients: []string{"192.168.7.0/24"}})
	hc := &http.Client{Timeout: 10 * time.Second}
	base := "http://" + addr
	do := func(method, path string, h http.Header) daemontest.Response {
		return daemontest.Do(t, hc, method, base+path, map[string]any{}, h)
	}
	// Loopback is not trusted by default: no pairing, no status.
	for _, path := range []string{"/machine/lmnt_marketplace/pair/start", "/machine/lmnt_marketplace/start_pairing"} {
		r := do("POST", path, nil)
		if r.Status != 403 {
			t.Fatalf("untrusted, keyless TCP client on %s: %d %s", path, r.Status, r.Body)
		}
		errorOf(t, r)
	}
	if len(d.Sim.Pairings()) != 0 {
		t.Fatal("a refused request reached the marketplace")
	}
	if r := do("GET", "/lmnt/v1/status", http.Header{"X-Api-Key": {"wrong"}}); r.Status != 403 {
		t.Fatalf("wrong key: %d", r.Status)
	}
	if r := do("GET", "/lmnt/v1/status", http.Header{"X-Api-Key": {"k3y-for-the-lan"}}); r.Status != 200 {
		t.Fatalf("right key: %d %s", r.Status, r.Body)
	}
	// A scraper is a client like any other.
	if r := do("GET", "/metrics", nil); r.Status != 403 {
		t.Fatalf("keyless scrape from an untrusted address: %d %s", r.Status, r.Body)
	}
	if r := do("GET", "/metrics", http.Header{"X-Api-Key": {"k3y-for-the-lan"}}); r.Status != 200 || !strings.Contains(string(r.Body), "lmntd_info{") {
		t.Fatalf("scrape with the key: %d %s", r.Status, r.Body)
	}
	// A loopback peer is a local user, whatever it claims to forward.
	if r := do("GET", "/lmnt/v1/status", http.Header{"X-Forwarded-For": {"192.168.7.20"}}); r.Status != 403 {
		t.Fatalf("X-Forwarded-For on the loopback listener: %d %s", r.Status, r.Body)
	}
	// A browser page from elsewhere must not drive a trusted client (CSRF).
	if r := do("POST", "/lmnt/v1/ready", http.Header{"X-Api-Key": {"k3y-for-the-lan"}, "Origin": {"https://evil.example"}}); r.Status != 403 {
		t.Fatalf("cross-origin request: %d", r.Status)
	}
	if r := do("POST", "/lmnt/v1/ready", http.Header{"X-Api-Key": {"k3y-for-the-lan"}, "Origin": {base}}); r.Status != 200 {
		t.Fatalf("same-origin request: %d %s", r.Status, r.Body)
	}
}

// TestUnixPeerCredentials runs a client as uid 65534 (nobody): not root, not
// lmntd's user, not in the API group ⇒ 403 naming the fix; the same uid
// with the API group as its primary group ⇒ admitted.
func TestUnixPeerCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a client as another uid and needs root: run it through make test, which runs as root")
	}
	g, err := user.LookupGroupId("65534")
	if err != nil {
		t.Fatalf("group 65534: %v", err)
	}
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, APIGroup: g.Name})
	if err := os.Chmod(d.Socket, 0o666); err != nil { // let the kernel's peer check, not the file mode, decide
		t.Fatal(err)
	}
	// The test binary sits in a private build directory: copy it where
	// nobody can run it.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(d.Dir, "peer-helper")
	if err := os.WriteFile(helper, self, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(gid uint32) (int, string) {
		cmd := exec.Command(helper)
		cmd.Dir = d.Dir
		cmd.Env = append(os.Environ(), "LMNTD_PEER_HELPER_SOCKET="+d.Socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as 65534:%d: %v\n%s", gid, err, out)
		}
		line := strings.TrimSpace(string(out))
		i := strings.Index(line, "STATUS ")
		if i < 0 {
			t.Fatalf("helper output: %s", out)
		}
		fields := strings.SplitN(line[i+7:], " ", 2)
		code, _ := strconv.Atoi(fields[0])
		return code, fields[1]
	}
	gid, _ := strconv.Atoi(g.Gid)
	if code, body := run(65533); code != 403 || !strings.Contains(body, "add yourself to group "+g.Name) {
		t.Fatalf("uid 65534 outside the group: %d %s", code, body)
	}
	if code, body := run(uint32(gid)); code != 200 {
		t.Fatalf("uid 65534 in the group: %d %s", code, body)
	}
}

// TestMain doubles as the client TestUnixPeerCredentials runs as another
// uid: with LMNTD_PEER_HELPER_SOCKET set, the binary makes one request and
// prints its answer instead of running tests.
func TestMain(m *testing.M) {
	if sock := os.Getenv("LMNTD_PEER_HELPER_SOCKET"); sock != "" {
		peerHelper(sock)
		return
	}
	code := m.Run()
	daemontest.CleanupBuild()
	os.Exit(code)
}

func peerHelper(sock string) {
	resp, err := daemontest.UnixClient(sock).Get("http://lmntd/lmnt/v1/status")
	if err != nil {
		fmt.Println("STATUS 0", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("STATUS %d %s\n", resp.StatusCode, strings.ReplaceAll(string(body), "\n", " "))
}

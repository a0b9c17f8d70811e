package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// curlAs runs curl as another uid (setpriv, no supplementary groups) and
// returns the HTTP status ("000" when it could not connect) and body.
func curlAs(t *testing.T, uid int, args ...string) (status, body string) {
	t.Helper()
	id := strconv.Itoa(uid)
	full := append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "curl", "-sS", "--max-time", "10",
		"-o", "-", "-w", "\n%{http_code}"}, args...)
	out, _ := exec.Command("setpriv", full...).CombinedOutput()
	text := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(text, '\n')
	if i < 0 {
		return text, ""
	}
	return text[i+1:], text[:i]
}

// openPath lets other uids traverse every directory above path (test
// directories are 0700), so that only the socket's own mode and lmntd's
// checks stand in the way.
func openPath(t *testing.T, path string) {
	t.Helper()
	for dir := filepath.Dir(path); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, st.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForwardedHeaderAttack is issue 15's first attack: a local user
// outside group lmnt (uid 65534) on the loopback TCP listener forges
// X-Forwarded-For with a trusted LAN address to pair the printer. It now
// gets 403, and the proxy socket, the only channel where the header counts,
// is closed to it; the web server's uid (www-data) gets a trusted client
// through. A rebinding page (Host: evil.example) is refused even with the key.
func TestForwardedHeaderAttack(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs clients as other uids (setpriv) and needs root: run it through make test, which runs as root")
	}
	const nginxUID = 33 // www-data on Debian
	addr := testutil.FreePort(t)
	d := daemontest.Start(t, daemontest.Options{NoStandin: true, HTTPListen: addr, APIKey: "k3y-for-the-lan",
		TrustedClients: []string{"192.168.7.0/24"}, ProxyGroup: "www-data"})
	openPath(t, d.ProxySocket)
	base := "http://" + addr

	// The attack over loopback TCP: status, pairing, bed clear.
	for _, req := range [][]string{
		{base + "/lmnt/v1/status"},
		{"-X", "POST", "-H", "Content-Type: application/json", "-d", `{"printer_name":"pwned"}`, base + "/machine/lmnt_marketplace/pair/start"},
		{"-X", "POST", base + "/machine/lmnt_marketplace/ready"},
	} {
		args := append([]string{"-H", "X-Forwarded-For: 192.168.7.77", "-H", "X-Real-IP: 192.168.7.77", "-H", "Forwarded: for=192.168.7.77"}, req...)
		if status, body := curlAs(t, 65534, args...); status != "403" || !strings.Contains(body, "this machine") {
			t.Fatalf("forged headers on loopback TCP %v: %s %s", req, status, body)
		}
	}
	if n := len(d.Sim.Pairings()); n != 0 {
		t.Fatalf("a refused request reached the marketplace: %d pairings", n)
	}

	// The proxy socket: the file mode keeps uid 65534 out...
	proxied := []string{"--unix-socket", d.ProxySocket, "-H", "X-Forwarded-For: 192.168.7.77", "http://localhost/lmnt/v1/status"}
	if status, body := curlAs(t, 65534, proxied...); status != "000" || !strings.Contains(body, "ermission denied") && !strings.Contains(body, "Couldn't connect") {
		t.Fatalf("uid 65534 on the proxy socket: %s %s", status, body)
	}
	// ...and were the mode wrong, lmntd's own check would.
	if err := os.Chmod(d.ProxySocket, 0o666); err != nil {
		t.Fatal(err)
	}
	if status, body := curlAs(t, 65534, proxied...); status != "403" || !strings.Contains(body, "not the web server") {
		t.Fatalf("uid 65534 on a world-writable proxy socket: %s %s", status, body)
	}
	// The web server forwarding a trusted LAN client is admitted; forwarding
	// a local user (loopback) is not.
	if status, body := curlAs(t, nginxUID, proxied...); status != "200" {
		t.Fatalf("www-data forwarding a trusted client: %s %s", status, body)
	}
	if status, body := curlAs(t, nginxUID, "--unix-socket", d.ProxySocket, "-H", "X-Forwarded-For: 127.0.0.1", "http://localhost/lmnt/v1/status"); status != "403" {
		t.Fatalf("www-data forwarding a loopback client: %s %s", status, body)
	}

	// DNS rebinding: the attacker's name for the printer is not a Host the
	// API answers, through the proxy or with the key on TCP.
	if status, body := curlAs(t, nginxUID, "--unix-socket", d.ProxySocket, "-H", "X-Forwarded-For: 192.168.7.77", "-H", "Host: evil.example",
		"http://localhost/lmnt/v1/status"); status != "403" || !strings.Contains(body, "evil.example") {
		t.Fatalf("rebinding Host through the proxy: %s %s", status, body)
	}
	if status, body := curlAs(t, 65534, "-H", "X-Api-Key: k3y-for-the-lan", "-H", "Host: evil.example:"+strings.Split(addr, ":")[1],
		"-H", "Origin: http://evil.example:"+strings.Split(addr, ":")[1], "-X", "POST", base+"/lmnt/v1/ready"); status != "403" {
		t.Fatalf("rebinding Host with the key: %s %s", status, body)
	}
}

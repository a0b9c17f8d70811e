//go:build system

package system

import (
	"bufio"
	"fmt"
	"net"
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

// The test LAN: the printer's side of a veth pair and two browsers in a
// network namespace, one inside trusted_clients (192.168.77.0/25), one not.
const (
	lanPrinter   = "192.168.77.1"
	lanTrusted   = "192.168.77.77"
	lanUntrusted = "192.168.77.200"
	lanTrustedNs = "192.168.77.0/25"
)

// TestNginxProxy puts Debian's nginx, configured with the shipped snippet,
// in front of the real lmntd binary, with the proxy socket passed by socket
// activation with the owner and mode of the shipped lmntd-proxy.socket. A
// trusted LAN browser gets the old plugin's routes through nginx; an
// untrusted one, a forged X-Forwarded-For, a rebinding Host, a cross-origin
// page, and a local user (uid 65534) on the loopback TCP port, through
// nginx on the printer's own address, or straight at the proxy socket are
// all refused.
func TestNginxProxy(t *testing.T) {
	done := stage(t, "nginx (shipped snippet) in front of lmntd: LAN client, forged headers")
	defer done()
	nginx := tool(t, "nginx")
	tool(t, "curl")
	tool(t, "setpriv")
	if _, err := user.Lookup("www-data"); err != nil {
		t.Fatalf("nginx's user www-data: %v", err)
	}

	// The shipped unit and snippet must agree on the socket; the test then
	// uses its own path for it (the only change to the snippet).
	unit := unitSettings(t, filepath.Join(repoRoot, "systemd/lmntd-proxy.socket"))
	snippet, err := os.ReadFile(filepath.Join(repoRoot, "packaging/nginx/lmntd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	shippedPath := unit["ListenStream"]
	if n := strings.Count(string(snippet), "unix:"+shippedPath+":"); n != 1 {
		t.Fatalf("the snippet proxies to %s %d times, want once (the unit listens there)", shippedPath, n)
	}
	if unit["FileDescriptorName"] != "proxy" || unit["SocketGroup"] != "www-data" || unit["SocketMode"] != "0660" {
		t.Fatalf("lmntd-proxy.socket: %v", unit)
	}

	dir, err := os.MkdirTemp("", "lmntd-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // nginx's workers (www-data) reach the socket below
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "lmntd")
	goBuild(t, "./cmd/lmntd", bin, "nginx-test")

	// The LAN.
	suffix := strconv.Itoa(os.Getpid() % 100000)
	ns, vethHost, vethLAN := "lmnt-lan-"+suffix, "lmh"+suffix, "lml"+suffix
	run(t, cmdOpts{quiet: true}, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	run(t, cmdOpts{quiet: true}, "ip", "link", "add", vethHost, "type", "veth", "peer", "name", vethLAN, "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "delete", vethHost).Run() })
	run(t, cmdOpts{quiet: true}, "ip", "addr", "add", lanPrinter+"/24", "dev", vethHost)
	run(t, cmdOpts{quiet: true}, "ip", "link", "set", vethHost, "up")
	for _, a := range []string{lanTrusted, lanUntrusted} {
		run(t, cmdOpts{quiet: true}, "ip", "-n", ns, "addr", "add", a+"/24", "dev", vethLAN)
	}
	run(t, cmdOpts{quiet: true}, "ip", "-n", ns, "link", "set", vethLAN, "up")
	run(t, cmdOpts{quiet: true}, "ip", "-n", ns, "link", "set", "lo", "up")

	// lmntd: the proxy socket as systemd would pass it, the rest its own.
	proxySock := filepath.Join(dir, "lmntd-proxy", "api.sock")
	proxyFile := activatedSocket(t, proxySock, unit)
	tcpAddr := testutil.FreePort(t)
	cfg := filepath.Join(dir, "lmntd.toml")
	writeFile(t, filepath.Join(dir, "printer.cfg"), "[virtual_sdcard]\npath: /tmp\n", 0o644)
	writeFile(t, cfg, fmt.Sprintf(`[marketplace]
url = "https://127.0.0.1:9"
cws_url = "https://127.0.0.1:9"
[push]
enabled = false
[paths]
state_directory = %[1]q
runtime_directory = %[2]q
[seal]
backend = "software"
[klipper]
user = "root"
config_file = %[3]q
bridge_socket = %[4]q
[api]
socket = %[5]q
listen = %[6]q
trusted_clients = [%[7]q]
`, filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "printer.cfg"),
		filepath.Join(dir, "run", "klipper.sock"), filepath.Join(dir, "run", "api.sock"), tcpAddr, lanTrustedNs), 0o644)
	daemonLog := &daemontest.SyncBuffer{}
	lmntd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "--config", cfg)
	lmntd.ExtraFiles = []*os.File{proxyFile}
	lmntd.Env = []string{"PATH=" + os.Getenv("PATH"), "LISTEN_FDS=1", "LISTEN_FDNAMES=proxy"}
	lmntd.Stdout, lmntd.Stderr = daemonLog, daemonLog
	startProcess(t, lmntd, "lmntd")
	proxyFile.Close()
	waitTCP(t, tcpAddr, daemonLog)

	// nginx: Debian's binary, the shipped snippet inside a server block as
	// on MainsailOS, its workers as www-data.
	writeFile(t, filepath.Join(dir, "lmntd.conf"), strings.Replace(string(snippet), shippedPath, proxySock, 1), 0o644)
	nginxPort := strings.Split(testutil.FreePort(t), ":")[1]
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, "nginx", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf(`daemon off;
user www-data;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log info;
events { worker_connections 64; }
http {
    access_log %[1]s/nginx-access.log;
    client_body_temp_path %[1]s/nginx/body;
    proxy_temp_path %[1]s/nginx/proxy;
    fastcgi_temp_path %[1]s/nginx/fastcgi;
    uwsgi_temp_path %[1]s/nginx/uwsgi;
    scgi_temp_path %[1]s/nginx/scgi;
    server {
        listen %[2]s:%[3]s;
        include %[1]s/lmntd.conf;
        location / { return 200 "mainsail\n"; }
    }
}
`, dir, lanPrinter, nginxPort), 0o644)
	run(t, cmdOpts{quiet: true}, nginx, "-t", "-q", "-e", filepath.Join(dir, "nginx-error.log"), "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	nginxLog := &daemontest.SyncBuffer{}
	nginxCmd := exec.Command(nginx, "-e", filepath.Join(dir, "nginx-error.log"), "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	nginxCmd.Stdout, nginxCmd.Stderr = nginxLog, nginxLog
	startProcess(t, nginxCmd, "nginx")
	web := "http://" + lanPrinter + ":" + nginxPort
	waitTCP(t, lanPrinter+":"+nginxPort, nginxLog)

	logs := func() string {
		el, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
		return "lmntd log:\n" + daemonLog.String() + "\nnginx error log:\n" + string(el)
	}
	lan := func(from string, args ...string) (string, string) {
		return curl(t, append([]string{"ip", "netns", "exec", ns}, "curl", "--interface", from), args...)
	}
	local := func(args ...string) (string, string) {
		return curl(t, []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl"}, args...)
	}
	status := "/machine/lmnt_marketplace/status"

	// The trusted LAN browser, through nginx.
	if code, body := lan(lanTrusted, web+status); code != "200" || !strings.Contains(body, `"auth"`) {
		t.Fatalf("trusted LAN client through nginx: %s %s\n%s", code, body, logs())
	}
	// Same-origin POST from the page nginx serves works; another origin,
	// or a rebinding Host, does not.
	if code, body := lan(lanTrusted, "-X", "POST", "-H", "Origin: "+web, web+"/machine/lmnt_marketplace/check_jobs"); code == "403" {
		t.Errorf("same-origin POST through nginx refused: %s", body)
	}
	if code, body := lan(lanTrusted, "-X", "POST", "-H", "Origin: http://evil.example", web+"/machine/lmnt_marketplace/ready"); code != "403" {
		t.Errorf("cross-origin POST through nginx: %s %s", code, body)
	}
	if code, body := lan(lanTrusted, "-H", "Host: evil.example:"+nginxPort, web+status); code != "403" || !strings.Contains(body, "evil.example") {
		t.Errorf("rebinding Host through nginx: %s %s", code, body)
	}
	// The untrusted LAN browser, also when it forges the header nginx sets.
	if code, body := lan(lanUntrusted, web+status); code != "403" {
		t.Errorf("untrusted LAN client through nginx: %s %s", code, body)
	}
	if code, body := lan(lanUntrusted, "-H", "X-Forwarded-For: "+lanTrusted, web+status); code != "403" || !strings.Contains(body, lanUntrusted) {
		t.Errorf("untrusted LAN client forging X-Forwarded-For through nginx: %s %s", code, body)
	}

	// A local user (uid 65534, not in group lmnt or www-data).
	forged := []string{"-H", "X-Forwarded-For: " + lanTrusted, "-H", "X-Real-IP: " + lanTrusted, "-H", "Forwarded: for=" + lanTrusted}
	for _, path := range []string{status, "/machine/lmnt_marketplace/ready", "/machine/lmnt_marketplace/pair/start"} {
		if code, body := local(append(append([]string{}, forged...), "-X", "POST", "http://"+tcpAddr+path)...); code != "403" {
			t.Errorf("local user on the loopback TCP port with forged headers, %s: %s %s", path, code, body)
		}
	}
	if code, body := local(append(append([]string{}, forged...), "http://"+tcpAddr+status)...); code != "403" {
		t.Errorf("local user on the loopback TCP port with forged headers: %s %s", code, body)
	}
	if code, body := local(web + status); code != "403" || !strings.Contains(body, "this machine") {
		t.Errorf("local user through nginx on the printer's LAN address: %s %s", code, body)
	}
	// The kernel refuses the connect itself (the socket's group and mode),
	// before lmntd's own peer check would.
	probe := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
		"import socket,sys\ntry:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')\nexcept OSError as e:\n    print(type(e).__name__)", proxySock)
	if out, _ := probe.CombinedOutput(); strings.TrimSpace(string(out)) != "PermissionError" {
		t.Errorf("local user straight at the proxy socket: %s", out)
	}
	if t.Failed() {
		t.Log(logs())
	}
}

// unitSettings reads the key=value lines of a unit file.
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// activatedSocket listens on path the way systemd sets up the socket unit:
// the directory with DirectoryMode=, the socket with SocketMode= and
// SocketGroup= (SocketUser= is lmntd's, root here).
func activatedSocket(t *testing.T, path string, unit map[string]string) *os.File {
	t.Helper()
	dirMode, _ := strconv.ParseUint(unit["DirectoryMode"], 8, 32)
	sockMode, _ := strconv.ParseUint(unit["SocketMode"], 8, 32)
	if err := os.MkdirAll(filepath.Dir(path), os.FileMode(dirMode)); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup(unit["SocketGroup"])
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(path, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, os.FileMode(sockMode)); err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // the socket stays for lmntd, as systemd's does
	l.Close()
	return f
}

// startProcess starts cmd and stops it (SIGTERM, then SIGKILL) at cleanup.
func startProcess(t *testing.T, cmd *exec.Cmd, name string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
}

func waitTCP(t *testing.T, addr string, log fmt.Stringer) {
	t.Helper()
	var err error
	listening := false
	defer func() { // runs after Eventually's Fatalf too
		if !listening {
			t.Logf("last dial: %v\n%s", err, log.String())
		}
	}()
	testutil.Eventually(t, 30*time.Second, "a listener on "+addr, func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
			return false
		}
		c.Close()
		return true
	})
	listening = true
}

// curl runs curl under prefix (namespace, uid) and returns the HTTP status
// ("000" when it could not connect) and the body or curl's error.
func curl(t *testing.T, prefix []string, args ...string) (status, body string) {
	t.Helper()
	full := append(append([]string{}, prefix[1:]...), append([]string{"-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"}, args...)...)
	out, _ := exec.Command(prefix[0], full...).CombinedOutput()
	text := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(text, '\n')
	if i < 0 {
		return text, ""
	}
	return text[i+1:], text[:i]
}

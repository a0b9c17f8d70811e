package daemon_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/daemon/daemontest"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
)

// notifications collects what the daemon sends to NOTIFY_SOCKET.
type notifications struct {
	ch chan string
}

func listenNotify(t *testing.T, path string) *notifications {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &notifications{ch: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.ch)
				return
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				n.ch <- line
			}
		}
	}()
	return n
}

// expect waits for a line with prefix and returns it, failing after 10 s.
func (n *notifications) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-n.ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timeout:
			t.Fatalf("no %q from lmntd within 10 s", prefix)
		}
	}
}

func listenerFile(t *testing.T, network, path string) *os.File {
	t.Helper()
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // systemd's socket outlives the service
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	t.Cleanup(func() { f.Close() })
	return f
}

// TestSystemdActivation starts the real lmntd binary the way systemd does:
// the API and bridge sockets passed as fds 3 and 4 named by LISTEN_FDNAMES,
// NOTIFY_SOCKET and WATCHDOG_USEC set. A request sent before lmntd started
// (socket activation: the first connection starts the service) is
// answered; READY=1, STATUS=, WATCHDOG=1, reload on SIGHUP and STOPPING=1
// on SIGTERM arrive; the configured socket paths are never created.
func TestSystemdActivation(t *testing.T) {
	bin := filepath.Join(daemontest.Build(t), "lmntd")
	d := daemontest.Setup(t, daemontest.Options{})
	actAPI, actBridge := filepath.Join(d.Dir, "activated-api.sock"), filepath.Join(d.Dir, "activated-klipper.sock")
	apiFile := listenerFile(t, "unix", actAPI)
	bridgeFile := listenerFile(t, "unixpacket", actBridge)
	notify := listenNotify(t, filepath.Join(d.Dir, "notify.sock"))

	// The first connection, before the service runs: it waits in the
	// socket's backlog, as with systemd.
	early, err := net.Dial("unix", actAPI)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := early.Write([]byte("GET /lmnt/v1/status HTTP/1.1\r\nHost: lmntd\r\n\r\n")); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "--config", d.ConfigFile, "--host-root", d.HostRoot)
	cmd.ExtraFiles = []*os.File{apiFile, bridgeFile}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LISTEN_FDS=2", "LISTEN_FDNAMES=api:klipper",
		"NOTIFY_SOCKET=" + filepath.Join(d.Dir, "notify.sock"), "WATCHDOG_USEC=400000"}
	log := &daemontest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})

	notify.expect(t, "READY=1")
	status := notify.expect(t, "STATUS=")
	if !strings.Contains(status, "not paired: run lmnt pair") {
		t.Errorf("first STATUS line %q", status)
	}
	early.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(early), nil)
	if err != nil {
		t.Fatalf("the request sent before start was not answered: %v\nlog:\n%s", err, log.String())
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("early request: %s", resp.Status)
	}
	notify.expect(t, "WATCHDOG=1")

	// Klipper connects to the passed bridge socket; STATUS follows.
	kl := standin.New(standin.Config{SocketPath: actBridge})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go kl.Run(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := kl.WaitConnected(wctx, true); err != nil {
		t.Fatalf("stand-in on the activated bridge socket: %v\nlog:\n%s", err, log.String())
	}

	// SIGHUP reloads.
	cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")

	cmd.Process.Signal(syscall.SIGTERM)
	notify.expect(t, "STOPPING=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("lmntd exit after SIGTERM: %v\nlog:\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("lmntd did not exit after SIGTERM\nlog:\n%s", log.String())
	}
	for _, p := range []string{d.Socket, d.Bridge} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created although the socket was passed by systemd", p)
		}
	}
	if !strings.Contains(log.String(), "socket_activated=true") {
		t.Errorf("log does not report socket activation:\n%s", log.String())
	}
}

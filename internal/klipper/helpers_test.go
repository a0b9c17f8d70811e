package klipper_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// testTimeout bounds every wait; the tests finish in milliseconds when
// things work.
const testTimeout = 10 * time.Second

// eventLog collects the server's events for assertions.
type eventLog struct {
	mu     sync.Mutex
	events []klipper.Event
	wake   chan struct{}
}

func newEventLog() *eventLog { return &eventLog{wake: make(chan struct{}, 1)} }

func (l *eventLog) add(ev klipper.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *eventLog) count(kind klipper.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// waitCount waits until n events of kind were seen.
func (l *eventLog) waitCount(t *testing.T, kind klipper.EventKind, n int) {
	t.Helper()
	deadline := time.After(testTimeout)
	for l.count(kind) < n {
		select {
		case <-l.wake:
		case <-deadline:
			t.Fatalf("saw %d %s events within %v, want %d", l.count(kind), kind, testTimeout, n)
		}
	}
}

// waitFor returns the first event (from the start) matching match.
func (l *eventLog) waitFor(t *testing.T, what string, match func(klipper.Event) bool) klipper.Event {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-deadline:
			t.Fatalf("no %s event within %v", what, testTimeout)
		}
	}
}

type testServer struct {
	srv    *klipper.Server
	socket string
	events *eventLog
}

// socketDir is a short directory (sun_path holds 108 bytes) that other uids
// may traverse, so a client dropped to another uid can reach the socket.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lmk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startServer(t *testing.T, opts klipper.Options) *testServer {
	t.Helper()
	ts := &testServer{socket: filepath.Join(socketDir(t), "klipper.sock"), events: newEventLog()}
	opts.OnEvent = ts.events.add
	ts.srv = klipper.NewServer(opts)
	l, err := klipper.Listen(ts.socket, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return ts
}

func startStandin(t *testing.T, socket string, cfg standin.Config) *standin.Standin {
	t.Helper()
	cfg.SocketPath = socket
	cfg.ReconnectMin = 10 * time.Millisecond
	cfg.ReconnectMax = 50 * time.Millisecond
	cfg.MinStatusGap = 5 * time.Millisecond
	k := standin.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return k
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitState waits until the server's State satisfies cond.
func waitState(t *testing.T, srv *klipper.Server, what string, cond func(klipper.State) bool) klipper.State {
	t.Helper()
	var st klipper.State
	met := false
	defer func() { // runs after Eventually's Fatalf too
		if !met {
			t.Logf("last server state: %+v", st)
		}
	}()
	testutil.Eventually(t, testTimeout, "server state "+what, func() bool {
		st = srv.State()
		return cond(st)
	})
	met = true
	return st
}

func connectedWithStatus(st klipper.State) bool { return st.Connected && st.HaveStatus }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// rawClient speaks the protocol by hand for the edge cases a well-behaved
// extra never produces.
type rawClient struct {
	t  *testing.T
	c  *net.UnixConn
	bf []byte
}

func dialRaw(t *testing.T, socket string) *rawClient {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, bf: make([]byte, klipper.MaxPacketSize+1)}
}

func (r *rawClient) sendRaw(b []byte, fds ...int) {
	r.t.Helper()
	if err := memfd.SendPacket(r.c, b, fds...); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) send(v any) {
	r.t.Helper()
	if err := memfd.SendJSON(r.c, v); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one packet; ok is false at EOF.
func (r *rawClient) recv() (pkt map[string]any, fds []int, ok bool) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(testTimeout))
	n, fds, err := memfd.ReceivePacket(r.c, r.bf, 1)
	if err != nil || n == 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("no packet within %v", testTimeout)
		}
		return nil, nil, false
	}
	if err := json.Unmarshal(r.bf[:n], &pkt); err != nil {
		r.t.Fatalf("undecodable packet %q: %v", r.bf[:n], err)
	}
	return pkt, fds, true
}

// expect reads one packet and checks its type (and error code).
func (r *rawClient) expect(typ, code string) map[string]any {
	r.t.Helper()
	pkt, fds, ok := r.recv()
	memfd.CloseFDs(fds)
	if !ok {
		r.t.Fatalf("connection closed, expected %s %s", typ, code)
	}
	if pkt["type"] != typ || (code != "" && pkt["code"] != code) {
		r.t.Fatalf("got %v, want type %s code %s", pkt, typ, code)
	}
	return pkt
}

func (r *rawClient) expectClosed() {
	r.t.Helper()
	if pkt, fds, ok := r.recv(); ok {
		memfd.CloseFDs(fds)
		r.t.Fatalf("connection still open, got %v", pkt)
	}
	r.c.Close() // lets a server that lingers after a refusal finish at once
}

func helloPacket() map[string]any {
	return map[string]any{"v": 1, "type": "hello", "extra_version": "raw-1",
		"klipper":     map[string]any{"version": "v0.12.0-1-gabc", "flavour": "klipper", "features": []string{"x"}},
		"config_file": "/home/pi/printer_data/config/printer.cfg"}
}

// handshake greets the server and sends a ready status.
func (r *rawClient) handshake() {
	r.t.Helper()
	r.send(helloPacket())
	r.expect("welcome", "")
	r.send(map[string]any{"v": 1, "type": "status", "klippy": map[string]any{"state": "ready"},
		"print_stats": map[string]any{"state": "standby"}})
}

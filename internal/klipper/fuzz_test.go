package klipper_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

func closeFDs(fds []int) { memfd.CloseFDs(fds) }

// FuzzBridgePacket sends one arbitrary packet to the real bridge server
// after a proper handshake, as a hostile or broken extra would. Whatever it
// is, the server must neither crash nor wedge: it answers, refuses or
// closes that connection, and a new extra connecting afterwards is
// welcomed and its status recorded. Seeds: one packet of every type, good
// and mangled, and testdata/fuzz/FuzzBridgePacket.
func FuzzBridgePacket(f *testing.F) {
	dir, err := os.MkdirTemp("", "lmkf")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "klipper.sock")
	srv := klipper.NewServer(klipper.Options{AllowedUIDs: []uint32{uint32(os.Getuid())}})
	l, err := klipper.Listen(socket, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	f.Cleanup(func() { cancel(); <-done })

	for _, p := range []map[string]any{
		helloPacket(),
		{"v": 1, "type": "status", "klippy": map[string]any{"state": "ready"}, "print_stats": map[string]any{"state": "printing", "filename": "lmnt/x.gcode", "progress": 0.5}},
		{"v": 1, "type": "result", "id": "p1", "ok": false, "error": "busy"},
		{"v": 1, "type": "error", "id": "p1", "code": "bad_packet", "message": "m"},
		{"v": 1, "type": "fetch", "id": "f1", "name": "lmnt/../../etc/passwd.gcode"},
		{"v": 1, "type": "command", "name": "LMNT_READY", "args": map[string]any{"x": []any{1, nil}}},
		{"v": 1, "type": "pong", "id": "zzz"},
		{"v": 2, "type": "status"},
		{"v": 1, "type": "print", "job_id": "j", "name": "n", "sha256": "00"},
		{"v": 1, "type": "status", "print_stats": "not an object", "klippy": 7},
		{"v": 1.5, "type": 3},
	} {
		data, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"v":1,"type":"status"`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte("\x00\xff{}"))

	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 2*klipper.MaxPacketSize {
			pkt = pkt[:2*klipper.MaxPacketSize]
		}
		hostile := dialRaw(t, socket)
		hostile.handshake()
		hostile.sendRaw(pkt)
		// Wait until the server has dealt with the packet: it records the
		// status sent right behind it, or it has closed the connection.
		marker := fmt.Sprintf("sync-%d.gcode", time.Now().UnixNano())
		_ = memfd.SendJSON(hostile.c, map[string]any{"v": 1, "type": "status", "klippy": map[string]any{"state": "ready"},
			"print_stats": map[string]any{"state": "standby", "filename": marker}})
		buf := make([]byte, klipper.MaxPacketSize+1)
		testutil.Eventually(t, testTimeout, fmt.Sprintf("the server to process the packet after %q or close the connection", pkt), func() bool {
			if st := srv.State(); st.Status.PrintStats.Filename == marker {
				return true
			}
			hostile.c.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
			n, fds, err := memfd.ReceivePacket(hostile.c, buf, 1)
			closeFDs(fds)
			var ne net.Error
			return err != nil && !(errors.As(err, &ne) && ne.Timeout()) || err == nil && n == 0 // closed by the server
		})

		// A new extra replaces the hostile one and is served normally.
		next := dialRaw(t, socket)
		next.send(helloPacket())
		for {
			p, fds, ok := next.recv()
			closeFDs(fds)
			if !ok {
				t.Fatalf("the server closed a new extra's connection after %q", pkt)
			}
			if p["type"] == "welcome" {
				break
			}
			if p["type"] != "ping" {
				t.Fatalf("hello after %q answered with %v", pkt, p)
			}
		}
		next.send(map[string]any{"v": 1, "type": "status", "klippy": map[string]any{"state": "ready"},
			"print_stats": map[string]any{"state": "complete", "filename": "after-fuzz.gcode"}})
		testutil.Eventually(t, testTimeout, fmt.Sprintf("the server to record status after %q", pkt), func() bool {
			st := srv.State()
			return st.Connected && st.HaveStatus && st.Status.PrintStats.Filename == "after-fuzz.gcode"
		})
		hostile.c.Close()
		next.c.Close()
	})
}

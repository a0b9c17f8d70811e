package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
)

// The Python extras' tests depend on this command/event interface; this
// test drives the built binary the way they do, with the Go stand-in as
// the Klipper side.
func TestHarnessInterface(t *testing.T) {
	dir, err := os.MkdirTemp("", "lmkh")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "lmnt-bridgeharness")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	socket := filepath.Join(dir, "k.sock")
	cmd := exec.Command(bin, "-socket", socket)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	events := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("event line %q: %v", sc.Text(), err)
				continue
			}
			events <- ev
		}
		close(events)
	}()
	next := func(kind string) map[string]any {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("harness exited before a %s event", kind)
				}
				if ev["event"] == kind {
					return ev
				}
				if ev["event"] == "error" {
					t.Fatalf("error event while waiting for %s: %v", kind, ev)
				}
			case <-timeout:
				t.Fatalf("no %s event", kind)
			}
		}
	}
	send := func(v map[string]any) {
		t.Helper()
		line, _ := json.Marshal(v)
		if _, err := stdin.Write(append(line, '\n')); err != nil {
			t.Fatal(err)
		}
	}

	if ev := next("listening"); ev["socket"] != socket {
		t.Errorf("listening event %v", ev)
	}
	k := standin.New(standin.Config{SocketPath: socket, ReconnectMin: 10 * time.Millisecond, MinStatusGap: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runDone := make(chan struct{})
	go func() { defer close(runDone); k.Run(ctx) }()
	defer func() { cancel(); <-runDone }()

	if ev := next("connected"); ev["hello"].(map[string]any)["extra_version"] != standin.ExtraVersion {
		t.Errorf("connected event %v", ev)
	}
	next("status")

	gcodePath := filepath.Join(dir, "job.gcode")
	content := []byte(strings.Repeat("G1 X1 Y2 E0.5\n", 1000))
	if err := os.WriteFile(gcodePath, content, 0o600); err != nil {
		t.Fatal(err)
	}
	send(map[string]any{"cmd": "print", "file": gcodePath, "job_id": "j1", "metadata": map[string]any{"total_layer": 7}})
	if ev := next("result"); ev["ok"] != true || ev["job_id"] != "j1" || ev["id"] == "" {
		t.Errorf("print result %v", ev)
	}
	if _, err := k.WaitFor(ctx, func(klipper.Status) bool { return len(k.Prints()) == 1 }); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if p := k.Prints()[0]; p.SHA256 != hex.EncodeToString(sum[:]) || p.Metadata.TotalLayer != 7 {
		t.Errorf("printed %+v", p)
	}
	for {
		ev := next("status")
		if ps := ev["status"].(map[string]any)["print_stats"].(map[string]any); ps["state"] == "complete" {
			break
		}
	}

	send(map[string]any{"cmd": "print_unsealed", "file": gcodePath, "job_id": "j2"})
	if ev := next("result"); ev["ok"] != false || !strings.Contains(ev["error"].(string), "seals") {
		t.Errorf("unsealed print result %v", ev)
	}

	send(map[string]any{"cmd": "hold", "file": gcodePath, "name": "virtual_m.gcode"})
	send(map[string]any{"cmd": "ping"}) // barrier: hold is done when pong arrives
	next("pong")
	if err := k.Fetch(ctx, "virtual_m.gcode"); err != nil {
		t.Fatal(err)
	}
	if ev := next("fetch"); ev["name"] != "virtual_m.gcode" || ev["served"] != true {
		t.Errorf("fetch event %v", ev)
	}
	if err := k.Fetch(ctx, "virtual_nope.gcode"); err == nil {
		t.Error("fetch of an unknown name succeeded")
	}
	if ev := next("fetch"); ev["served"] != false {
		t.Errorf("fetch event for unknown name %v", ev)
	}

	send(map[string]any{"cmd": "console", "text": "LMNT: hi"})
	send(map[string]any{"cmd": "cancel", "job_id": "nope", "reason": "test"})
	if ev := next("result"); ev["ok"] != false || ev["op"] != "cancel" {
		t.Errorf("cancel of an unknown job %v", ev)
	}
	if lines := k.ConsoleLines(); !containsLine(lines, "LMNT: hi") {
		t.Errorf("console lines %q", lines)
	}
	if err := k.SendReady(map[string]any{"X": 1}); err != nil {
		t.Fatal(err)
	}
	if ev := next("command"); ev["name"] != "LMNT_READY" {
		t.Errorf("command event %v", ev)
	}

	k.FirmwareRestart()
	next("disconnected")
	next("connected")

	send(map[string]any{"cmd": "quit"})
	if err := cmd.Wait(); err != nil {
		t.Errorf("harness exit: %v", err)
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

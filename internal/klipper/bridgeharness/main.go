// Command bridgeharness runs the real lmntd bridge server (package klipper)
// under the control of a test: the Python tests of the Klipper extras start
// it, drive it with JSON commands on stdin and read JSON events from stdout,
// one object per line. It is a test tool and is not installed.
//
// Commands (stdin):
//
//	{"cmd":"print","file":PATH,"job_id":ID,"metadata":{...}}   sealed memfd of PATH, sent with `print`
//	{"cmd":"print_unsealed", same fields}                      the same, but the memfd is NOT sealed
//	{"cmd":"stage","file":PATH,"name":NAME}                    offer PATH for SET_GCODE_FD FILENAME=NAME
//	{"cmd":"cancel","job_id":ID,"reason":TEXT}
//	{"cmd":"console","text":TEXT}
//	{"cmd":"state","state":{...}}                               lmntd's state for the extras' get_status
//	print also takes "filename" (the metadata stub's print_stats name) and "title"
//	{"cmd":"ping"}
//	{"cmd":"quit"}                                             (EOF on stdin also quits)
//
// Events (stdout), each flushed as it happens:
//
//	{"event":"listening","socket":PATH}
//	{"event":"connected","hello":{...hello fields...}}
//	{"event":"status","status":{klippy,print_stats,virtual_sdcard,ready_confirmed}}   every status packet
//	{"event":"result","id":ID,"job_id":ID,"ok":BOOL,"error":TEXT,"op":"print"|"file"|"cancel","name":NAME}
//	{"event":"command","name":"LMNT_READY","args":{...}}
//	{"event":"fetch","name":NAME,"served":BOOL[,"reason":TEXT]}
//	{"event":"rejected","uid":N,"reason":TEXT}     wrong uid, or unsupported protocol version
//	{"event":"disconnected","reason":TEXT}
//	{"event":"pong","rtt_ms":F}                    answer to the ping command
//	{"event":"error","message":TEXT}               a command failed before reaching Klipper
//
// Commands run in order; print, cancel and ping wait for Klipper aside, so
// the next command is read at once. stage and console complete before the
// next command is read, so {"cmd":"ping"} after them is a barrier whose pong
// says they are done.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/internal/testhook"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

type uidList []uint32

func (u *uidList) String() string { return fmt.Sprint(*u) }
func (u *uidList) Set(v string) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("uid %q: %w", v, err)
	}
	*u = append(*u, uint32(n))
	return nil
}

type command struct {
	Cmd      string              `json:"cmd"`
	File     string              `json:"file"`
	Name     string              `json:"name"`
	JobID    string              `json:"job_id"`
	Metadata klipper.Metadata    `json:"metadata"`
	Reason   string              `json:"reason"`
	Text     string              `json:"text"`
	Filename string              `json:"filename"`
	Title    string              `json:"title"`
	State    klipper.DaemonState `json:"state"`
}

// emitter writes one JSON event per line; os.Stdout is unbuffered, so each
// line reaches the reader as soon as it is written.
type emitter struct{ mu sync.Mutex }

func (e *emitter) emit(fields map[string]any) {
	line, err := json.Marshal(fields)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"error","message":%q}`, err.Error()))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func (e *emitter) error(format string, args ...any) {
	e.emit(map[string]any{"event": "error", "message": fmt.Sprintf(format, args...)})
}

func main() {
	socket := flag.String("socket", "", "path of the bridge socket to listen on (required)")
	var uids uidList
	flag.Var(&uids, "allow-uid", "uid allowed to connect (repeatable; default: own uid)")
	requestTimeout := flag.Duration("timeout", 30*time.Second, "how long a print or cancel waits for its result")
	statusInterval := flag.Duration("status-interval", 5*time.Second, "status interval announced in welcome")
	verbose := flag.Bool("v", false, "log the server's debug log to stderr")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "bridgeharness: -socket is required")
		os.Exit(2)
	}
	if len(uids) == 0 {
		uids = uidList{uint32(os.Getuid())}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	out := &emitter{}
	srv := klipper.NewServer(klipper.Options{
		AllowedUIDs:    uids,
		Logger:         logger,
		StatusInterval: *statusInterval,
		OnEvent:        func(ev klipper.Event) { out.emit(eventFields(ev)) },
	})
	l, err := klipper.Listen(*socket, 0o666)
	if err != nil {
		out.error("%v", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	out.emit(map[string]any{"event": "listening", "socket": *socket})

	go func() {
		for c := range srv.Commands() {
			out.emit(map[string]any{"event": "command", "name": c.Name, "args": c.Args})
		}
	}()

	h := &harness{srv: srv, out: out, timeout: *requestTimeout}
	h.readCommands(os.Stdin)
	cancel()
	h.wg.Wait()
	if err := <-served; err != nil {
		out.error("%v", err)
		os.Exit(1)
	}
}

func eventFields(ev klipper.Event) map[string]any {
	f := map[string]any{"event": string(ev.Kind)}
	switch ev.Kind {
	case klipper.EventConnected:
		f["hello"] = ev.Hello
	case klipper.EventStatus:
		f["status"] = ev.Status
	case klipper.EventResult:
		f["id"], f["job_id"], f["ok"], f["error"] = ev.Result.ID, ev.Result.JobID, ev.Result.OK, ev.Result.Error
		if ev.Result.Name != "" {
			f["name"] = ev.Result.Name
		}
		f["op"] = ev.Result.Op
	case klipper.EventFetch:
		f["name"], f["served"] = ev.Name, ev.Served
		if ev.Reason != "" {
			f["reason"] = ev.Reason
		}
	case klipper.EventRejected:
		f["uid"], f["reason"] = ev.UID, ev.Reason
	case klipper.EventDisconnected:
		f["reason"] = ev.Reason
	}
	return f
}

type harness struct {
	srv     *klipper.Server
	out     *emitter
	timeout time.Duration
	wg      sync.WaitGroup
}

func (h *harness) readCommands(in *os.File) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			h.out.error("bad command line: %v", err)
			continue
		}
		if c.Cmd == "quit" {
			return
		}
		h.run(c)
	}
	if err := sc.Err(); err != nil {
		h.out.error("reading stdin: %v", err)
	}
}

func (h *harness) run(c command) {
	switch c.Cmd {
	case "print", "print_unsealed":
		f, err := memfdFromFile(c.File, c.Cmd == "print")
		if err != nil {
			h.out.error("%s: %v", c.Cmd, err)
			return
		}
		// Print waits for Klipper's result; run it aside so stdin stays live
		// (a test may cancel while the print is being handed over).
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer f.Close()
			if c.Cmd == "print_unsealed" {
				testhook.SkipSealCheck.Store(true)
				defer testhook.SkipSealCheck.Store(false)
			}
			ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
			defer cancel()
			err := h.srv.Print(ctx, klipper.PrintRequest{JobID: c.JobID, Name: c.Name, Filename: c.Filename, Title: c.Title, Metadata: fromWire(c.Metadata)}, f)
			// A refusal by the extra already arrived as a result event.
			if err != nil && !errors.Is(err, klipper.ErrRejected) {
				h.out.error("print %s: %v", c.JobID, err)
			}
		}()
	case "stage":
		f, err := memfdFromFile(c.File, true)
		if err != nil {
			h.out.error("stage: %v", err)
			return
		}
		if err := h.srv.Stage(c.Name, f, c.Metadata); err != nil {
			f.Close()
			h.out.error("stage %s: %v", c.Name, err)
		}
	case "cancel":
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
			defer cancel()
			if err := h.srv.Cancel(ctx, c.JobID, c.Reason); err != nil && !errors.Is(err, klipper.ErrRejected) {
				h.out.error("cancel %s: %v", c.JobID, err)
			}
		}()
	case "console":
		if err := h.srv.Console(c.Text); err != nil {
			h.out.error("console: %v", err)
		}
	case "state":
		h.srv.SetDaemonState(c.State)
	case "ping":
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
			defer cancel()
			rtt, err := h.srv.Ping(ctx)
			if err != nil {
				h.out.error("ping: %v", err)
				return
			}
			h.out.emit(map[string]any{"event": "pong", "rtt_ms": float64(rtt.Microseconds()) / 1000})
		}()
	default:
		h.out.error("unknown cmd %q", c.Cmd)
	}
}

// memfdFromFile copies path into a new memfd, sealed unless seal is false.
func memfdFromFile(path string, seal bool) (*memfd.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	f, err := memfd.Create("bridgeharness")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, err
	}
	if seal {
		if err := f.Seal(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// fromWire is the gate's metadata that the print packet encodes as m: the
// test scripts state the metadata as it travels.
func fromWire(m klipper.Metadata) *gcode.Metadata {
	return &gcode.Metadata{LayerCount: m.TotalLayer, EstimatedTime: m.EstimatedTime, SlicerName: m.Slicer,
		FilamentUsedMM: m.FilamentUsedMM, FilamentType: m.FilamentType, LayerHeight: m.LayerHeight,
		ObjectHeight: m.ObjectHeight}
}

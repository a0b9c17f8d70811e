// Package bridgetest runs the real lmntd bridge server (package klipper)
// under the control of a test, for cmd/lmnt-bridgeharness: the Python tests
// of the Klipper extras start that program, drive it with JSON commands on
// stdin and read JSON events from stdout, one object per line. It lives in
// internal/klipper because print_unsealed flips the server's test-only seal
// switch (internal/klipper/internal/testhook), which Go lets no package
// outside internal/klipper reach; shipped programs must not import it, as
// they must not import the stand-in.
//
// Commands (stdin):
//
//	{"cmd":"print","file":PATH,"job_id":ID,"metadata":{...}}   sealed memfd of PATH, sent with `print`
//	{"cmd":"print_unsealed", same fields}                      the same, but the memfd is NOT sealed
//	{"cmd":"hold","file":PATH,"name":NAME}                     hold PATH for SET_GCODE_FD FILENAME=NAME
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
// the next command is read at once. hold and console complete before the
// next command is read, so {"cmd":"ping"} after them is a barrier whose pong
// says they are done.
package bridgetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/internal/testhook"
	"github.com/lmnt-marketplace/lmntd/internal/memfd"
)

// Config is the harness's command line.
type Config struct {
	Socket         string        // the bridge socket to listen on
	AllowedUIDs    []uint32      // uids allowed to connect
	RequestTimeout time.Duration // how long a print, cancel or ping waits for its result
	StatusInterval time.Duration // announced in welcome
	Logger         *slog.Logger  // the server's log
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

// emitter writes one JSON event per line, each in one Write, so that an
// unbuffered out (os.Stdout) hands every line to the reader at once.
type emitter struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *emitter) emit(fields map[string]any) {
	line, err := json.Marshal(fields)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"error","message":%q}`, err.Error()))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(append(line, '\n'))
}

func (e *emitter) error(format string, args ...any) {
	e.emit(map[string]any{"event": "error", "message": fmt.Sprintf(format, args...)})
}

// Run serves the bridge socket and runs the commands read from in until
// "quit" or EOF, writing events to out. A failure to listen or serve is
// also an error event.
func Run(cfg Config, in io.Reader, out io.Writer) error {
	emit := &emitter{w: out}
	srv := klipper.NewServer(klipper.Options{
		AllowedUIDs:    cfg.AllowedUIDs,
		Logger:         cfg.Logger,
		StatusInterval: cfg.StatusInterval,
		OnEvent:        func(ev klipper.Event) { emit.emit(eventFields(ev)) },
	})
	l, err := klipper.Listen(cfg.Socket, 0o666)
	if err != nil {
		emit.error("%v", err)
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	emit.emit(map[string]any{"event": "listening", "socket": cfg.Socket})

	go func() {
		for c := range srv.Commands() {
			emit.emit(map[string]any{"event": "command", "name": c.Name, "args": c.Args})
		}
	}()

	h := &harness{srv: srv, out: emit, timeout: cfg.RequestTimeout}
	h.readCommands(in)
	cancel()
	h.wg.Wait()
	if err := <-served; err != nil {
		emit.error("%v", err)
		return err
	}
	return nil
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

func (h *harness) readCommands(in io.Reader) {
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
	case "hold":
		f, err := memfdFromFile(c.File, true)
		if err != nil {
			h.out.error("hold: %v", err)
			return
		}
		if err := h.srv.Hold(c.Name, f, c.Metadata); err != nil {
			f.Close()
			h.out.error("hold %s: %v", c.Name, err)
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

// Command lmnt-klipper-standin is a fake Klipper with the lmnt bridge extra,
// for demos and tests where no printer is at hand. It connects to lmntd's
// bridge socket like Klipper does, prints the jobs lmntd sends by reading
// them at a chosen speed, and tells what it does in plain lines.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/klipper"
	"github.com/lmnt-marketplace/lmntd/internal/klipper/standin"
)

const usage = `lmnt-klipper-standin — a stand-in for Klipper with the lmnt bridge extra.

It connects to lmntd's Klipper bridge socket as Klipper would (and keeps
reconnecting), reports Klipper's status, and "prints" every file lmntd sends:
it checks that the file is a sealed memfd, reads it line by line at --speed
and reports progress, layers and filament used, as virtual_sdcard would. No
printer moves; nothing is written to disk.

Run it as the user lmntd accepts as Klipper's (see lmntd's klipper.user).

Usage: lmnt-klipper-standin [flags]

Flags:
%s
While it runs, type a command and Enter (or send SIGUSR1 for "ready"):
  ready            LMNT_READY: confirm the bed is clear
  pause | resume | cancel
  error TEXT       fail the print with a Klipper error
  shutdown TEXT    put Klipper in the shutdown state
  restart          FIRMWARE_RESTART: drop the connection, come back fresh
  fetch NAME       SET_GCODE_FD FILENAME=NAME (print a file lmntd holds)
  status           show the current status
`

func main() {
	flags := pflag.NewFlagSet("lmnt-klipper-standin", pflag.ContinueOnError)
	socket := flags.String("socket", "/run/lmntd/klipper.sock", "lmntd's Klipper bridge socket")
	speed := flags.String("speed", "instant", `reading speed: "instant" or bytes per second, e.g. 50000, 200k, 2M`)
	autoReady := flags.Bool("auto-ready", false, "confirm the bed is clear (LMNT_READY) after every connect and finished print")
	klipperVersion := flags.String("klipper-version", "v0.13.0-standin", "Klipper version announced to lmntd")
	flavour := flags.String("flavour", "klipper", `Klipper flavour announced: "klipper" or "kalico"`)
	configFile := flags.String("config-file", "/home/pi/printer_data/config/printer.cfg", "printer.cfg path announced to lmntd")
	logLevel := flags.String("log-level", "warn", "log level on stderr: debug, info, warn, error")
	flags.Usage = func() { fmt.Fprintf(os.Stderr, usage, flags.FlagUsages()) }
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "lmnt-klipper-standin:", err)
		os.Exit(2)
	}
	bytesPerSecond, err := parseSpeed(*speed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lmnt-klipper-standin: --speed:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "lmnt-klipper-standin: --log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	out := &printer{w: os.Stdout}
	k := standin.New(standin.Config{
		SocketPath:     *socket,
		Speed:          bytesPerSecond,
		Logger:         logger,
		KlipperVersion: *klipperVersion,
		Flavour:        *flavour,
		ConfigFile:     *configFile,
		ReconnectMin:   time.Second,
		ReconnectMax:   30 * time.Second,
		OnConsole:      func(line string) { out.say("console: %s", line) },
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)

	speedText := "instantly"
	if bytesPerSecond > 0 {
		speedText = fmt.Sprintf("at %s/s", humanBytes(bytesPerSecond))
	}
	out.say("Klipper stand-in %s (%s), reading files %s; connecting to %s", *klipperVersion, *flavour, speedText, *socket)

	go k.Run(ctx)
	go watch(ctx, k, out, *autoReady)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				out.result("ready", k.SendReady(map[string]any{}))
			}
		}
	}()
	go readCommands(ctx, os.Stdin, k, out)
	<-ctx.Done()
	out.say("stopping")
}

// parseSpeed reads "instant" or a byte rate with an optional k/M suffix.
func parseSpeed(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "instant" || s == "0" {
		return 0, nil
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1000*1000, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf(`%q is neither "instant" nor a positive number of bytes per second`, s)
	}
	return n * mult, nil
}

// printer writes whole lines, one at a time.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (p *printer) result(what string, err error) {
	if err != nil {
		p.say("%s: %v", what, err)
		return
	}
	p.say("%s: ok", what)
}

// watch prints a line on every change that matters to a person: connection,
// Klipper state, print state, and progress every 10 % (at most once a
// second in between).
func watch(ctx context.Context, k *standin.Standin, out *printer, autoReady bool) {
	changes, unsubscribe := k.Subscribe()
	defer unsubscribe()
	var (
		connected   bool
		klippy      string
		state       string
		decile      = -1
		lastLine    time.Time
		lastRefusal *klipper.ErrorPacket
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
		st := k.Status()
		if c := k.Connected(); c != connected {
			connected = c
			if c {
				out.say("connected to lmntd")
				if autoReady {
					out.result("bed clear (LMNT_READY)", k.SendReady(map[string]any{"AUTO": 1}))
				}
			} else {
				out.say("disconnected from lmntd; reconnecting")
			}
		}
		if e := k.LastError(); e != nil && (lastRefusal == nil || e.Code != lastRefusal.Code || e.Message != lastRefusal.Message) {
			lastRefusal = e
			out.say("lmntd refused: %s: %s", e.Code, e.Message)
		}
		if st.Klippy.State != klippy {
			klippy = st.Klippy.State
			out.say("Klipper %s: %s", klippy, st.Klippy.Message)
		}
		ps, sd := st.PrintStats, st.VirtualSDCard
		if ps.State != state {
			state = ps.State
			decile = -1
			switch state {
			case standin.StatePrinting:
				out.say("printing %s (%s)", ps.Filename, humanBytes(sd.FileSize))
			case standin.StateStandby:
			default:
				line := fmt.Sprintf("%s %s after %s, %.1f mm of filament", state, ps.Filename, time.Duration(ps.PrintDuration*float64(time.Second)).Round(time.Second), ps.FilamentUsed)
				if ps.Message != "" {
					line += ": " + ps.Message
				}
				out.say("%s", line)
				if autoReady && connected && state != standin.StatePaused {
					out.result("bed clear (LMNT_READY)", k.SendReady(map[string]any{"AUTO": 1}))
				}
			}
		}
		if state == standin.StatePrinting {
			d := int(sd.Progress * 10)
			if d != decile && time.Since(lastLine) >= time.Second || d > decile && d%10 == 0 {
				decile, lastLine = d, time.Now()
				out.say("  %3.0f%%  %s / %s  %s  filament %.1f mm", sd.Progress*100, humanBytes(sd.FilePosition), humanBytes(sd.FileSize), layers(ps.Info), ps.FilamentUsed)
			}
		}
	}
}

func layers(info klipper.PrintStatsInfo) string {
	if info.CurrentLayer == nil {
		return ""
	}
	if info.TotalLayer == nil {
		return fmt.Sprintf("layer %d", *info.CurrentLayer)
	}
	return fmt.Sprintf("layer %d/%d", *info.CurrentLayer, *info.TotalLayer)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func readCommands(ctx context.Context, in io.Reader, k *standin.Standin, out *printer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		arg = strings.TrimSpace(arg)
		switch strings.ToLower(verb) {
		case "":
		case "ready":
			out.result("ready", k.SendReady(map[string]any{}))
		case "pause":
			out.result("pause", k.Pause())
		case "resume":
			out.result("resume", k.Resume())
		case "cancel":
			out.result("cancel", k.Cancel())
		case "error":
			out.result("error", k.InjectError(orDefault(arg, "injected error")))
		case "shutdown":
			k.Shutdown(orDefault(arg, "Shutdown due to M112 command"))
		case "restart":
			k.FirmwareRestart()
		case "fetch":
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			out.result("fetch "+arg, k.Fetch(fctx, arg))
			cancel()
		case "status":
			st := k.Status()
			out.say("klippy %s, print %s %s, progress %.1f%%, connected %v",
				st.Klippy.State, st.PrintStats.State, st.PrintStats.Filename, st.VirtualSDCard.Progress*100, k.Connected())
		default:
			out.say("unknown command %q (ready, pause, resume, cancel, error, shutdown, restart, fetch, status)", verb)
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Package cli is the lmnt command: the owner's and the fleet's view of
// lmntd through its API socket (status, pairing, jobs, local prints,
// health checks, keys, bed-clear, restart when idle) and `lmnt demo`, the
// whole system on one machine without privileges.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

const usage = `lmnt — control lmntd, the LMNT Marketplace printer agent.

Usage: lmnt [--instance NAME | --socket PATH] COMMAND [flags]

Commands:
  status                 what lmntd is doing (--json for scripts and fleets)
  pair                   pair this printer: shows the code, waits for approval
  register               pair with a marketplace account login (legacy marketplace)
  jobs                   the job queue and recent jobs (--json)
  print FILE             print a local encrypted (or plain) G-code file
  ready                  confirm the bed is clear: the next job may start
  doctor                 check the installation (exit 0 healthy, 1 degraded, 2 broken)
  keys show|import-legacy|reseal
                         the printer key: show it, import the old plugin's, move its sealing
  restart --when-idle    restart lmntd as soon as no job is running
  setup [--remove]       wire lmntd into Klipper (extras, group, printer.cfg, unit drop-in)
  demo                   run the whole system locally with a simulated marketplace
  version                print the version

Run lmnt COMMAND --help for a command's flags. The API socket is group lmnt's.
On a host with several Klipper instances, --instance NAME picks one (lmntd@NAME);
lmnt status without it shows them all.
`

// Main runs the lmnt command line and returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	global := pflag.NewFlagSet("lmnt", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(stderr)
	socket := global.String("socket", envOr("LMNT_SOCKET", DefaultSocket), "lmntd's API socket (also LMNT_SOCKET)")
	instance := global.String("instance", os.Getenv("LMNT_INSTANCE"), "the Klipper instance's lmntd (lmntd@NAME) on a host with several (also LMNT_INSTANCE)")
	runDir := global.String("runtime-dir", DefaultRuntimeDir, "where the instances' API sockets are")
	_ = global.MarkHidden("runtime-dir") // tests
	timeout := global.Duration("timeout", DefaultAnswerTimeout, "how long to wait for lmntd's answer to a request")
	showVersion := global.Bool("version", false, "print the version")
	global.Usage = func() { fmt.Fprint(stdout, usage); fmt.Fprint(stdout, "\nGlobal flags:\n"+global.FlagUsages()) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lmnt:", err)
		return 2
	}
	rest := global.Args()
	if *showVersion {
		rest = []string{"version"}
	}
	if len(rest) == 0 {
		global.Usage()
		return 2
	}
	socketSet := global.Changed("socket") || os.Getenv("LMNT_SOCKET") != ""
	if *instance != "" {
		if err := config.CheckInstanceName(*instance); err != nil {
			fmt.Fprintln(stderr, "lmnt: --instance:", err)
			return 2
		}
		if socketSet {
			fmt.Fprintln(stderr, "lmnt: --instance and --socket (or LMNT_SOCKET) name two sockets: give one")
			return 2
		}
		*socket = instanceSocket(*runDir, *instance)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{ctx: ctx, c: newClient(*socket, *timeout), socket: *socket, stdin: stdin, stdout: stdout, stderr: stderr,
		runDir: *runDir, instanceChosen: *instance != "" || socketSet, socketSet: socketSet}
	cmd, cargs := rest[0], rest[1:]
	var run func([]string) (int, error)
	switch cmd {
	case "status":
		run = e.status
	case "pair":
		run = e.pair
	case "register":
		run = e.register
	case "jobs":
		run = e.jobs
	case "print":
		run = e.print
	case "ready":
		run = e.ready
	case "doctor":
		run = e.doctor
	case "keys":
		run = e.keys
	case "restart":
		run = e.restart
	case "setup":
		run = e.setup
	case "demo":
		run = e.demo
	case "version", "--version":
		fmt.Fprintln(stdout, "lmnt", version.Version)
		return 0
	case "help":
		global.Usage()
		return 0
	default:
		fmt.Fprintf(stderr, "lmnt: unknown command %q (see lmnt --help)\n", cmd)
		return 2
	}
	if *instance != "" && (cmd == "setup" || cmd == "demo") {
		// lmnt setup wires the default lmntd (its own --instance picks the
		// Klipper instance); wiring a further lmntd@NAME is not built yet.
		fmt.Fprintf(stderr, "lmnt: %s does not take the global --instance (see lmnt %s --help)\n", cmd, cmd)
		return 2
	}
	code, err := run(cargs)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lmnt "+cmd+":", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// env is one invocation's context.
type env struct {
	ctx            context.Context
	c              *client
	socket         string
	runDir         string
	instanceChosen bool // --instance or --socket: one lmntd, not all
	socketSet      bool // --socket or LMNT_SOCKET
	stdin          io.Reader
	stdout, stderr io.Writer
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (e *env) flags(name, synopsis string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("lmnt "+name, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	// `lmnt pair --instance NAME` as well as `lmnt --instance NAME pair`;
	// setup's own --instance picks the Klipper instance it wires.
	if name != "setup" && name != "demo" {
		fs.Var(instanceFlag{e}, "instance", "the Klipper instance's lmntd (lmntd@NAME) on a host with several")
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: lmnt %s\n\nFlags:\n%s", synopsis, fs.FlagUsages())
	}
	return fs
}

func parse(fs *pflag.FlagSet, args []string, positional int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != positional {
		if positional == 0 {
			return fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		return fmt.Errorf("want %d argument(s), got %d", positional, fs.NArg())
	}
	return nil
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) status(args []string) (int, error) {
	fs := e.flags("status", "status [--json]")
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if !e.instanceChosen {
		if names := instances(e.runDir); len(names) > 1 || len(names) == 1 && names[0] != "" {
			return e.statusAll(names, *asJSON)
		}
	}
	return e.statusOne(*asJSON)
}

// statusOne shows the status of the lmntd on e's socket.
func (e *env) statusOne(asJSON bool) (int, error) {
	if asJSON {
		var raw json.RawMessage
		if err := e.c.get(e.ctx, "/lmnt/v1/status", &raw); err != nil {
			return 1, err
		}
		_, err := e.stdout.Write(raw)
		return 0, err
	}
	var st api.Status
	if err := e.c.get(e.ctx, "/lmnt/v1/status", &st); err != nil {
		return 1, err
	}
	w := e.stdout
	fmt.Fprintf(w, "lmntd %s: %s\n", st.Version, st.Summary)
	fmt.Fprintf(w, "  health:      %s\n", st.Health)
	name := st.Printer.Name
	if name == "" {
		name = "(unnamed)"
	}
	switch {
	case st.Auth.PairingLost:
		fmt.Fprintf(w, "  printer:     %s, pairing LOST: run lmnt pair\n", name)
	case st.Auth.PrinterID != "":
		fmt.Fprintf(w, "  printer:     %s (id %s) at %s\n", name, st.Auth.PrinterID, st.Marketplace)
		if st.Auth.TokenExpiry != nil && st.Auth.Authenticated {
			fmt.Fprintf(w, "  token:       valid until %s\n", st.Auth.TokenExpiry.Local().Format(time.RFC1123))
		}
		if st.Auth.Problem != "" {
			fmt.Fprintf(w, "  token:       %s\n", st.Auth.Problem)
		}
	default:
		fmt.Fprintf(w, "  printer:     not paired (lmnt pair)\n")
	}
	if st.Profile != "" {
		fmt.Fprintf(w, "  api:         %s profile (%s)\n", st.Profile, st.ProfileReason)
	}
	if st.Pairing != nil && st.Pairing.PairingCode != "" {
		fmt.Fprintf(w, "  pairing:     code %s, %s\n", st.Pairing.PairingCode, st.Pairing.Status)
	}
	switch st.Key.State {
	case "ok":
		fmt.Fprintf(w, "  key:         %s, sealed with %s\n", short(st.Key.KeyID), st.Key.Backend)
	default:
		fmt.Fprintf(w, "  key:         %s: %s\n", strings.ToUpper(st.Key.State), st.Key.Problem)
	}
	kl := "not connected"
	if st.Klipper.Connected {
		kl = fmt.Sprintf("connected, %s (Klipper %s)", orDash(st.Klipper.Klippy), orDash(st.Klipper.Version))
	}
	fmt.Fprintf(w, "  klipper:     %s\n", kl)
	if st.Klipper.ConfigSummary != "" {
		fmt.Fprintf(w, "  printer.cfg: %s\n", st.Klipper.ConfigSummary)
	}
	fmt.Fprintf(w, "  jobs:        %s\n", jobsLine(st.Jobs))
	if st.Restart {
		fmt.Fprintf(w, "  restart:     requested, waiting for the active job to end\n")
	}
	return 0, nil
}

func jobsLine(s jobsSnapshot) string {
	parts := []string{}
	if s.Active != nil {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", s.Active.ID, s.Active.State, progressText(s.Active.Progress, s.Active.ProgressUnknown)))
	} else {
		parts = append(parts, "none active")
	}
	parts = append(parts, fmt.Sprintf("%d queued", len(s.Queue)))
	if s.Waiting != "" {
		parts = append(parts, s.Waiting)
	}
	// The bed matters only when no print occupies it.
	if !s.AutoStart && (s.Active == nil || s.Active.State != "printing" && s.Active.State != "paused") {
		if s.BedClear {
			parts = append(parts, "bed confirmed clear")
		} else {
			parts = append(parts, "bed not confirmed clear (lmnt ready)")
		}
	}
	return strings.Join(parts, "; ")
}

// progressText is a job's progress, or why it is not known now.
func progressText(progress float64, unknown bool) string {
	if unknown {
		return "progress unknown: Klipper not connected"
	}
	return fmt.Sprintf("%.0f%%", progress*100)
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) jobs(args []string) (int, error) {
	fs := e.flags("jobs", "jobs [--json] [--cancel ID]")
	asJSON := fs.Bool("json", false, "print the queue as JSON")
	cancel := fs.String("cancel", "", "cancel this job")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if *cancel != "" {
		if err := e.c.post(e.ctx, "/lmnt/v1/jobs/cancel", map[string]string{"id": *cancel, "reason": "cancelled with lmnt jobs --cancel"}, nil); err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "cancelling %s\n", *cancel)
		return 0, nil
	}
	var s jobsSnapshot
	if *asJSON {
		var raw json.RawMessage
		if err := e.c.get(e.ctx, "/lmnt/v1/jobs", &raw); err != nil {
			return 1, err
		}
		_, err := e.stdout.Write(raw)
		return 0, err
	}
	if err := e.c.get(e.ctx, "/lmnt/v1/jobs", &s); err != nil {
		return 1, err
	}
	w := e.stdout
	row := func(j jobInfo) {
		name := j.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(w, "  %-28s %-11s %5.0f%%  %-24s %s\n", j.ID, j.State, j.Progress*100, trunc(name, 24), j.Message)
	}
	fmt.Fprintln(w, "active:")
	if s.Active != nil {
		row(*s.Active)
	} else {
		fmt.Fprintln(w, "  (none)")
	}
	fmt.Fprintf(w, "queued: %d\n", len(s.Queue))
	for _, j := range s.Queue {
		row(j)
	}
	if s.Waiting != "" {
		fmt.Fprintf(w, "  %s\n", s.Waiting)
	}
	fmt.Fprintf(w, "finished (newest first): %d\n", len(s.Finished))
	for _, j := range s.Finished {
		row(j)
	}
	return 0, nil
}

func trunc(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func (e *env) ready(args []string) (int, error) {
	fs := e.flags("ready", "ready")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if err := e.c.post(e.ctx, "/lmnt/v1/ready", nil, nil); err != nil {
		return 1, err
	}
	fmt.Fprintln(e.stdout, "bed confirmed clear: the next job may start")
	return 0, nil
}

func (e *env) restart(args []string) (int, error) {
	fs := e.flags("restart", "restart --when-idle")
	whenIdle := fs.Bool("when-idle", false, "restart as soon as no job is downloading, decrypting or printing")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if !*whenIdle {
		return 2, errors.New("lmntd restarts only when idle (--when-idle); to force a restart use systemctl restart lmntd")
	}
	var res api.RestartResult
	if err := e.c.post(e.ctx, "/lmnt/v1/restart", map[string]bool{"when_idle": true}, &res); err != nil {
		return 1, err
	}
	fmt.Fprintln(e.stdout, res.Message)
	return 0, nil
}

// Package cli is the lmnt command: the owner's and the fleet's view of
// lmntd through its API socket (status, pairing, jobs, local prints,
// health checks, keys, bed-clear, restart when idle, setup). It speaks the
// API through internal/apiclient and internal/apitype and never links the
// daemon: no job engine, pipeline, Klipper bridge or marketplace client
// (test/deps enforces it). The demo is a separate program, cmd/lmnt-demo.
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

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/apiclient"
	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

// Command is one lmnt subcommand. The table below is the single source of
// the command list: lmnt --help renders it, and the manual page is
// generated from it.
type Command struct {
	Name    string // as typed
	Args    string // the synopsis after the name, e.g. "FILE [flags]"
	Summary string // one sentence, owner's words
	run     func(e *env, args []string) (int, error)
}

// Commands lists lmnt's subcommands in the order --help shows them.
var Commands = []Command{
	{"status", "[--json] [--watch]", "what lmntd is doing; --watch follows the job", (*env).status},
	{"pair", "[--name NAME]", "pair this printer: shows the code, waits", (*env).pair},
	{"register", "--email E --name N", "pair by account login (legacy marketplace)", (*env).register},
	{"jobs", "[--json] [--cancel ID]", "the job queue and recent jobs", (*env).jobs},
	{"print", "FILE [--follow]", "print a G-code file (plain or encrypted)", (*env).print},
	{"ready", "", "confirm the bed is clear: the next job may start", (*env).ready},
	{"doctor", "[--offline] [--json]", "check the install (exit 0 ok, 1 degraded, 2 broken)", (*env).doctor},
	{"keys", "show|import-legacy|reseal", "the printer key: show, import the old, reseal", (*env).keys},
	{"restart", "--when-idle", "restart lmntd once no job is running", (*env).restart},
	{"setup", "[--remove]", "wire lmntd into Klipper, or undo it (--remove)", (*env).setup},
	{"version", "", "print the version", nil},
}

// usageText renders lmnt --help within 80 columns.
func usageText(globalFlags string) string {
	var b strings.Builder
	b.WriteString("lmnt — the command line of lmntd, the LMNT Marketplace printer agent.\n\n")
	b.WriteString("Usage: lmnt [--instance NAME | --socket PATH] COMMAND [flags]\n\nCommands:\n")
	for _, c := range Commands {
		head := c.Name
		if c.Args != "" {
			head += " " + c.Args
		}
		const col = 2 + 26 + 1
		summary := wrap(c.Summary, 80-col, strings.Repeat(" ", col))
		if len(head) > 26 {
			fmt.Fprintf(&b, "  %s\n  %-26s %s\n", head, "", summary)
		} else {
			fmt.Fprintf(&b, "  %-26s %s\n", head, summary)
		}
	}
	b.WriteString("\nRun lmnt COMMAND --help for a command's flags. The API socket belongs to\n")
	b.WriteString("group lmnt: after joining it, log in again (or use sudo). On a host with\n")
	b.WriteString("several Klipper instances, --instance NAME picks one (lmntd@NAME); lmnt\n")
	b.WriteString("status without it shows them all.\n")
	b.WriteString("\nGlobal flags:\n" + strings.TrimRight(globalFlags, "\n") + "\n")
	return b.String()
}

// Main runs the lmnt command line and returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	global := pflag.NewFlagSet("lmnt", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(stderr)
	socket := global.String("socket", envOr("LMNT_SOCKET", apiclient.DefaultSocket), "lmntd's API socket (also LMNT_SOCKET)")
	instance := global.String("instance", os.Getenv("LMNT_INSTANCE"), "the Klipper instance's lmntd (lmntd@NAME) on a host with several (also LMNT_INSTANCE)")
	runDir := global.String("runtime-dir", DefaultRuntimeDir, "where the instances' API sockets are")
	_ = global.MarkHidden("runtime-dir") // tests
	timeout := global.Duration("timeout", apiclient.DefaultAnswerTimeout, "how long to wait for lmntd's answer")
	showVersion := global.Bool("version", false, "print the version")
	global.Usage = func() { fmt.Fprint(stdout, usageText(global.FlagUsagesWrapped(80))) }
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
	// A reader that stops early (lmnt jobs | grep -q, | head) must not kill
	// lmnt with SIGPIPE mid-output: under `set -o pipefail` that turns a
	// match into a failure. Writes then just fail, and lmnt ends normally.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{ctx: ctx, c: apiclient.New(*socket, *timeout), stdin: stdin, stdout: stdout, stderr: stderr,
		runDir: *runDir, instanceChosen: *instance != "" || socketSet, socketSet: socketSet}
	name, cargs := rest[0], rest[1:]
	var run func(*env, []string) (int, error)
	for _, c := range Commands {
		if c.Name == name {
			run = c.run
		}
	}
	switch {
	case name == "version" || name == "--version":
		fmt.Fprintln(stdout, "lmnt", version.Version)
		return 0
	case name == "help":
		global.Usage()
		return 0
	case run == nil:
		fmt.Fprintf(stderr, "lmnt: unknown command %q (see lmnt --help)\n", name)
		return 2
	}
	if *instance != "" && name == "setup" {
		// lmnt setup's own --instance picks the Klipper instance, which
		// decides whether the default lmntd or a further lmntd@NAME serves it.
		fmt.Fprintf(stderr, "lmnt: %s does not take the global --instance (see lmnt %s --help)\n", name, name)
		return 2
	}
	code, err := run(e, cargs)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, wrap("lmnt "+name+": "+ownerWords(name, err), 80, "  "))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// ownerWords is err's message for the owner: Go's context errors in
// words, and no second "name:" prefix when a message already carries one.
func ownerWords(name string, err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "gave up: the time limit passed (see --timeout)"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	}
	msg := err.Error()
	for {
		trimmed := strings.TrimPrefix(strings.TrimPrefix(msg, "lmnt "+name+": "), name+": ")
		if trimmed == msg {
			return msg
		}
		msg = trimmed
	}
}

// env is one invocation's context.
type env struct {
	ctx            context.Context
	c              *apiclient.Client
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

// cmdFlags is one command's flag set with its synopsis, so that a wrong
// number of arguments can show the usage.
type cmdFlags struct {
	*pflag.FlagSet
	synopsis string
	e        *env
}

func (e *env) flags(name, synopsis string) *cmdFlags {
	fs := pflag.NewFlagSet("lmnt "+name, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	// `lmnt pair --instance NAME` as well as `lmnt --instance NAME pair`;
	// setup's own --instance picks the Klipper instance it wires.
	if name != "setup" {
		fs.Var(instanceFlag{e}, "instance", "the Klipper instance's lmntd (lmntd@NAME) on a host with several")
	}
	c := &cmdFlags{FlagSet: fs, synopsis: synopsis, e: e}
	fs.Usage = func() { c.usage(e.stdout) }
	return c
}

func (c *cmdFlags) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: lmnt %s\n", wrap(c.synopsis, 80-len("Usage: lmnt "), strings.Repeat(" ", len("Usage: lmnt "))))
	if c.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s\n", strings.TrimRight(c.FlagUsagesWrapped(80), "\n"))
	}
}

// parse parses a command's flags and checks it got positional arguments;
// when not, it shows the usage on stderr and says what was missing.
func parse(fs *cmdFlags, args []string, positional int) error {
	fs.SetOutput(io.Discard) // the error is printed once, by Main
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, pflag.ErrHelp) {
			fs.usage(fs.e.stderr)
		}
		return err
	}
	if fs.NArg() != positional {
		fs.usage(fs.e.stderr)
		switch {
		case positional == 0:
			return fmt.Errorf("unexpected argument %q", fs.Arg(0))
		case fs.NArg() < positional:
			return errors.New("missing argument (see the usage above)")
		}
		return fmt.Errorf("too many arguments: %q", fs.Args()[positional:])
	}
	return nil
}

// wrap breaks s at spaces into lines of at most width runes, indenting
// the continuation lines; a word longer than width (a path) is cut.
func wrap(s string, width int, indent string) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		for len([]rune(w)) > width {
			if line != "" {
				lines, line = append(lines, line), ""
			}
			r := []rune(w)
			lines, w = append(lines, string(r[:width])), string(r[width:])
		}
		switch {
		case line == "":
			line = w
		case len([]rune(line))+1+len([]rune(w)) > width:
			lines, line = append(lines, line), w
		default:
			line += " " + w
		}
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n"+indent)
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) status(args []string) (int, error) {
	fs := e.flags("status", "status [--json] [--watch]")
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	watch := fs.Bool("watch", false, "then follow the current job's progress until it ends")
	if err := parse(fs, args, 0); err != nil {
		return 2, err
	}
	if *watch && *asJSON {
		return 2, errors.New("--watch and --json do not go together")
	}
	if !e.instanceChosen {
		if names := instances(e.runDir); len(names) > 1 || len(names) == 1 && names[0] != "" {
			if *watch {
				return 2, errors.New("--watch follows one lmntd: give --instance NAME")
			}
			return e.statusAll(names, *asJSON)
		}
	}
	return e.statusOne(*asJSON, *watch)
}

// statusOne shows the status of the lmntd on e's socket; watch then follows
// its current job.
func (e *env) statusOne(asJSON, watch bool) (int, error) {
	if asJSON {
		var raw json.RawMessage
		if err := e.c.Get(e.ctx, "/lmnt/v1/status", &raw); err != nil {
			return 1, err
		}
		_, err := e.stdout.Write(raw)
		return 0, err
	}
	var st apitype.Status
	if err := e.c.Get(e.ctx, "/lmnt/v1/status", &st); err != nil {
		return 1, err
	}
	w := e.stdout
	field := func(label, format string, args ...any) {
		const indent = "               "
		fmt.Fprintf(w, "  %-12s %s\n", label+":", wrap(fmt.Sprintf(format, args...), 80-len(indent), indent))
	}
	fmt.Fprintf(w, "lmntd %s\n", st.Version)
	field("state", "%s", st.Summary)
	field("health", "%s", st.Health)
	name := st.Printer.Name
	if name == "" {
		name = "(unnamed)"
	}
	switch {
	case st.Auth.PairingLost:
		field("printer", "%s, pairing LOST: run lmnt pair", name)
	case st.Auth.PrinterID != "":
		field("printer", "%s (id %s)", name, st.Auth.PrinterID)
		field("marketplace", "%s", st.Marketplace)
		if st.Auth.TokenExpiry != nil && st.Auth.Authenticated {
			field("token", "valid until %s", st.Auth.TokenExpiry.Local().Format("2006-01-02 15:04 MST"))
		}
		if st.Auth.Problem != "" {
			field("token", "%s", st.Auth.Problem)
		}
	default:
		field("printer", "not paired (lmnt pair)")
	}
	if st.Profile != "" {
		field("api", "%s profile (%s)", st.Profile, st.ProfileReason)
	}
	if st.Pairing != nil && st.Pairing.PairingCode != "" {
		field("pairing", "code %s, %s", st.Pairing.PairingCode, st.Pairing.Status)
	}
	switch st.Key.State {
	case "ok":
		field("key", "%s, sealed with %s", short(st.Key.KeyID), st.Key.Backend)
	default:
		field("key", "%s: %s", strings.ToUpper(st.Key.State), st.Key.Problem)
	}
	kl := "not connected"
	if st.Klipper.Connected {
		kl = fmt.Sprintf("connected, %s (Klipper %s)", orDash(st.Klipper.Klippy), orDash(st.Klipper.Version))
	}
	if st.Klipper.Problem != "" {
		kl = st.Klipper.Problem
	}
	field("klipper", "%s", kl)
	if st.Klipper.NextStep != "" {
		field("next step", "%s", st.Klipper.NextStep)
	}
	if st.Klipper.ConfigSummary != "" {
		field("printer.cfg", "%s", st.Klipper.ConfigSummary)
	}
	field("jobs", "%s", jobsLine(st.Jobs))
	if st.Restart {
		field("restart", "requested, waiting for the active job to end")
	}
	if watch {
		switch {
		case st.Jobs.Active != nil:
			return e.followJob(e.ctx, st.Jobs.Active.ID)
		case len(st.Jobs.Queue) > 0:
			return e.followJob(e.ctx, st.Jobs.Queue[0].ID)
		}
		fmt.Fprintln(w, "no job is running or queued: nothing to watch")
	}
	return 0, nil
}

func jobsLine(s apitype.Snapshot) string {
	parts := []string{}
	if s.Active != nil {
		parts = append(parts, fmt.Sprintf("%s: %s", jobTitle(*s.Active), stateWords(*s.Active)))
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
		if err := e.c.Post(e.ctx, "/lmnt/v1/jobs/cancel", map[string]string{"id": *cancel, "reason": "cancelled with lmnt jobs --cancel"}, nil); err != nil {
			return 1, err
		}
		fmt.Fprintf(e.stdout, "cancelling %s\n", *cancel)
		return 0, nil
	}
	var s apitype.Snapshot
	if *asJSON {
		var raw json.RawMessage
		if err := e.c.Get(e.ctx, "/lmnt/v1/jobs", &raw); err != nil {
			return 1, err
		}
		_, err := e.stdout.Write(raw)
		return 0, err
	}
	if err := e.c.Get(e.ctx, "/lmnt/v1/jobs", &s); err != nil {
		return 1, err
	}
	e.jobsTable(s)
	return 0, nil
}

// jobsTable prints the queue within 80 columns: a row per job (id, state,
// progress, title) and its message on the next line.
func (e *env) jobsTable(s apitype.Snapshot) {
	w := e.stdout
	row := func(j apitype.JobInfo) {
		prog := ""
		if j.State == apitype.JobPrinting || j.State == apitype.JobPaused || j.State == apitype.JobSucceeded {
			prog = fmt.Sprintf("%3.0f%%", j.Progress*100)
		}
		state := string(j.State)
		if j.State == apitype.JobAccepted {
			state = "queued"
		}
		fmt.Fprintf(w, "  %-22s %-10s %4s  %s\n", abbrevID(j.ID, 22), state, prog, trunc(orDash(j.Name), 80-42))
		if j.Message != "" {
			fmt.Fprintf(w, "    %s\n", wrap(j.Message, 80-4, "    "))
		}
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
		fmt.Fprintf(w, "  %s\n", wrap(s.Waiting, 80-2, "  "))
	}
	fmt.Fprintf(w, "finished (newest first): %d\n", len(s.Finished))
	for _, j := range s.Finished {
		row(j)
	}
}

// abbrevID keeps an id whole when it fits in n columns, else its start and
// end (lmnt jobs --json has the whole id).
func abbrevID(id string, n int) string {
	if len(id) <= n {
		return id
	}
	return id[:n-5] + "…" + id[len(id)-4:]
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
	if err := e.c.Post(e.ctx, "/lmnt/v1/ready", nil, nil); err != nil {
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
	var res apitype.RestartResult
	if err := e.c.Post(e.ctx, "/lmnt/v1/restart", map[string]bool{"when_idle": true}, &res); err != nil {
		return 1, err
	}
	fmt.Fprintln(e.stdout, res.Message)
	return 0, nil
}

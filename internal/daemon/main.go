package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/version"
)

const usage = `lmntd — the LMNT Marketplace printer agent.

It receives print jobs encrypted for this printer, decrypts them into sealed
memory only, and hands them to Klipper. Run it under systemd (lmntd.service,
socket-activated); lmnt is its command-line client.

Usage: lmntd [flags]

Every setting of /etc/lmntd/lmntd.toml can also be given as a flag (below)
or as an LMNTD_* environment variable; flags win. SIGHUP reloads the
configuration. Exit status 75 means "restart requested while idle".

Flags:
%s`

// Main is lmntd's command line: it parses args and runs the daemon with
// signal handling. It returns the process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("lmntd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	hostRoot := fs.String("host-root", "/", "root under which /proc, /sys and /etc are read (board identity, old plugin's fingerprint)")
	apiGroup := fs.String("api-group", "lmnt", "group whose members may use the API socket (besides root and lmntd's user)")
	config.RegisterFlags(fs)
	fs.Usage = func() { fmt.Fprintf(stdout, usage, flagUsages80(fs)) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lmntd:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lmntd: unexpected argument %q (see lmntd --help)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "lmntd", version.Version)
		return 0
	}
	if err := hardenProcess(); err != nil {
		fmt.Fprintln(stderr, "lmntd:", err)
		return 1
	}
	err := Run(context.Background(), Options{
		Config:        config.Options{Flags: fs},
		LogOutput:     stderr,
		HostRoot:      *hostRoot,
		APIGroup:      *apiGroup,
		HandleSignals: true,
	})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrRestartRequested):
		return ExitRestart
	}
	fmt.Fprintln(stderr, "lmntd:", err)
	return 1
}

// flagUsages lists the flags for an 80-column terminal: each flag on its
// own line, its description wrapped below it (the defaults are long paths
// and URLs that no column layout fits).
func flagUsages80(fs *pflag.FlagSet) string {
	const indent = "        "
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		typ, usage := pflag.UnquoteUsage(f)
		head := "  --" + f.Name
		if f.Shorthand != "" {
			head = "  -" + f.Shorthand + ", --" + f.Name
		}
		if typ != "" && f.NoOptDefVal == "" {
			head += " " + typ
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			if typ == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += " (default " + f.DefValue + ")"
			}
		}
		b.WriteString(head + "\n")
		line := ""
		for _, w := range strings.Fields(usage) {
			if line != "" && len(indent)+len(line)+1+len(w) > 80 {
				b.WriteString(indent + line + "\n")
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		b.WriteString(indent + line + "\n")
	})
	return b.String()
}

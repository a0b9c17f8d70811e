package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"

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
	fs.Usage = func() { fmt.Fprintf(stdout, usage, fs.FlagUsagesWrapped(80)) }
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

// Command lmnt-bridgeharness runs the real lmntd bridge server under the
// control of a test: the Python tests of the Klipper extras start it, drive
// it with JSON commands on stdin and read JSON events from stdout, one
// object per line (internal/klipper/bridgetest has the commands and
// events). It is a test tool and is not installed.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/klipper/bridgetest"
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

func main() {
	socket := flag.String("socket", "", "path of the bridge socket to listen on (required)")
	var uids uidList
	flag.Var(&uids, "allow-uid", "uid allowed to connect (repeatable; default: own uid)")
	requestTimeout := flag.Duration("timeout", 30*time.Second, "how long a print or cancel waits for its result")
	statusInterval := flag.Duration("status-interval", 5*time.Second, "status interval announced in welcome")
	verbose := flag.Bool("v", false, "log the server's debug log to stderr")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "lmnt-bridgeharness: -socket is required")
		os.Exit(2)
	}
	if len(uids) == 0 {
		uids = uidList{uint32(os.Getuid())}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg := bridgetest.Config{
		Socket:         *socket,
		AllowedUIDs:    uids,
		RequestTimeout: *requestTimeout,
		StatusInterval: *statusInterval,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	// The error is already an event on stdout.
	if err := bridgetest.Run(cfg, os.Stdin, os.Stdout); err != nil {
		os.Exit(1)
	}
}

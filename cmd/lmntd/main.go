// Command lmntd is the LMNT Marketplace printer agent (see internal/daemon).
package main

import (
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], os.Stdout, os.Stderr))
}

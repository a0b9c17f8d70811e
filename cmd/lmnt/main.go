// Command lmnt is lmntd's command-line client (see internal/cli).
package main

import (
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Command lmnt-marketsim runs the LMNT Marketplace simulator (package
// internal/marketsim) for development, demos and manual tests. Run it with
// --help for how to use it next to a printer.
package main

import (
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/marketsim"
)

func main() {
	os.Exit(marketsim.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Command lmnt-demo runs lmntd end to end on this machine without
// privileges: the marketplace simulator, the real lmntd and a Klipper
// stand-in (see internal/demo). `make demo` runs it. A development tool:
// no package or release ships it.
package main

import (
	"os"

	"github.com/lmnt-marketplace/lmntd/internal/demo"
)

func main() {
	os.Exit(demo.Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Command lmnt-docgen writes lmntd(8), lmnt(1) and the bash completions from
// the programs' own --help (see internal/docgen). The release runs it
// (scripts/release-files.sh); it is not packaged.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/cli"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/daemon"
	"github.com/lmnt-marketplace/lmntd/internal/docgen"
)

func main() {
	out := flag.String("out", "", "directory to write man/ and completion/ into")
	version := flag.String("version", "", "the release's version")
	date := flag.String("date", "", "the pages' date, YYYY-MM-DD (the commit's date, for reproducible builds)")
	flag.Parse()
	if *out == "" || *version == "" || *date == "" {
		fmt.Fprintln(os.Stderr, "usage: lmnt-docgen --out DIR --version V --date YYYY-MM-DD")
		os.Exit(2)
	}
	// Defaults the environment changes (LMNT_SOCKET) must not reach the pages.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "LMNT_") || strings.HasPrefix(name, "LMNTD_") {
			os.Unsetenv(name)
		}
	}
	lmnt := func(args []string, stdout *strings.Builder) int {
		return cli.Main(args, strings.NewReader(""), stdout, io.Discard)
	}
	lmntd := func(args []string, stdout *strings.Builder) int {
		return daemon.Main(args, stdout, io.Discard)
	}
	d := config.Defaults()
	files := map[string]string{
		config.DefaultConfigFile: "the configuration, every key documented; a dpkg conffile that belongs to the owner",
		config.DropInDir(config.DefaultConfigFile) + "/*.toml": "drop-ins read after it in name order, each overriding the ones before: " +
			"lmnt setup writes 50-setup.toml, image builders 10-image.toml",
		d.Paths.StateDirectory:   "durable state: the sealed printer key, the token, the job journal",
		d.Paths.RuntimeDirectory: "the API and Klipper bridge sockets",
	}
	if err := docgen.Generate(*out, docgen.Page{Version: *version, Date: *date}, lmnt, lmntd, files); err != nil {
		fmt.Fprintln(os.Stderr, "lmnt-docgen:", err)
		os.Exit(1)
	}
}

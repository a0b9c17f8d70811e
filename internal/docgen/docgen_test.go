package docgen

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lmnt-marketplace/lmntd/internal/cli"
	"github.com/lmnt-marketplace/lmntd/internal/config"
	"github.com/lmnt-marketplace/lmntd/internal/daemon"
)

func lmnt(args []string, stdout *strings.Builder) int {
	return cli.Main(args, strings.NewReader(""), stdout, io.Discard)
}

func lmntd(args []string, stdout *strings.Builder) int { return daemon.Main(args, stdout, io.Discard) }

func generate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{config.DefaultConfigFile: "the configuration"}
	if err := Generate(dir, Page{Version: "1.2.3", Date: "2026-12-01"}, lmnt, lmntd, files); err != nil {
		t.Fatal(err)
	}
	return dir
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every daemon flag the config schema defines is in lmntd(8), checked
// against the flag set itself rather than against the help text.
func TestLmntdPageHasEveryFlag(t *testing.T) {
	page := read(t, filepath.Join(generate(t), "man/lmntd.8"))
	fs := pflag.NewFlagSet("lmntd", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if !strings.Contains(page, `\fB\-\-`+roff(f.Name)+`\fR`) {
			t.Errorf("lmntd.8 lacks --%s", f.Name)
		}
	})
	if n < 20 {
		t.Fatalf("only %d flags registered", n)
	}
	for _, want := range []string{".TH LMNTD 8 \"2026-12-01\" \"lmntd 1.2.3\"", "\\-\\-host\\-root", "/etc/lmntd/lmntd.toml", "lmntd \\- the LMNT Marketplace printer agent"} {
		if !strings.Contains(page, want) {
			t.Errorf("lmntd.8 lacks %q", want)
		}
	}
}

// Every command of lmnt and every flag of every command is in lmnt(1), and
// the keys subcommands each have a section.
func TestLmntPageHasEveryCommandAndFlag(t *testing.T) {
	page := read(t, filepath.Join(generate(t), "man/lmnt.1"))
	cmds, _, err := Commands(lmnt)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range cmds {
		names[c.Name] = true
		if !strings.Contains(page, `.SS "\fBlmnt\fR \fB`+roff(c.Name)) && !strings.Contains(page, `.SS "lmnt `+roff(c.Name)) {
			t.Errorf("lmnt.1 has no section for %s", c.Name)
		}
		helps := []*Help{c.Help}
		for _, s := range c.Subs {
			helps = append(helps, s.Help)
		}
		for _, h := range helps {
			if h == nil {
				continue
			}
			for _, f := range h.Flags {
				if !strings.Contains(page, `\fB\-\-`+roff(f.Long)+`\fR`) {
					t.Errorf("lmnt.1 lacks %s --%s", c.Name, f.Long)
				}
			}
		}
	}
	for _, want := range []string{"status", "pair", "setup", "keys", "doctor"} {
		if !names[want] {
			t.Errorf("command %s not found in lmnt --help", want)
		}
	}
	// whatis (and lintian's bad-whatis-entry) needs "name \- what" in NAME.
	if !strings.Contains(page, ".SH NAME\nlmnt \\- ") {
		t.Errorf("lmnt.1's NAME section is not a whatis entry:\n%.300s", page)
	}
	for _, sub := range []string{"show", "import\\-legacy", "reseal"} {
		if !strings.Contains(page, `.SS "\fBlmnt\fR \fBkeys\fR \fB`+sub+`\fR`) {
			t.Errorf("lmnt.1 has no section for keys %s", sub)
		}
	}
	setup := cmds[0]
	for _, c := range cmds {
		if c.Name == "setup" {
			setup = c
		}
	}
	if f := setup.Help.Flags; len(f) == 0 || !strings.Contains(page, `\fB\-n\fR, \fB\-\-dry\-run\fR`) {
		t.Errorf("setup's -n, --dry-run is missing: %+v", f)
	}
}

// The demo is a development program (cmd/lmnt-demo), not a command of the
// shipped lmnt: neither its manual page nor its completion offers it.
func TestLmntPageHasNoDemo(t *testing.T) {
	dir := generate(t)
	for _, p := range []string{"man/lmnt.1", "completion/lmnt"} {
		if text := read(t, filepath.Join(dir, p)); strings.Contains(strings.ToLower(text), "demo") {
			t.Errorf("%s mentions the demo", p)
		}
	}
}

// man formats both pages without a warning (lintian runs the same check).
func TestPagesFormatWithoutWarnings(t *testing.T) {
	dir := generate(t)
	for _, p := range []string{"man/lmntd.8", "man/lmnt.1"} {
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", filepath.Join(dir, p))
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80")
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man %s: %v\n%s", p, err, stderr.String())
		}
	}
}

// The completion offers what the definitions hold, in bash itself.
func TestBashCompletion(t *testing.T) {
	dir := generate(t)
	for _, tc := range []struct {
		file  string
		words []string
		want  string
	}{
		{"lmnt", []string{"lmnt", "sta"}, "status"},
		{"lmnt", []string{"lmnt", "--socket", "/run/x.sock", "ke"}, "keys"},
		{"lmnt", []string{"lmnt", "keys", "re"}, "reseal"},
		{"lmnt", []string{"lmnt", "keys", "reseal", "--t"}, "--to"},
		{"lmnt", []string{"lmnt", "setup", "--dr"}, "--dry-run"},
		{"lmnt", []string{"lmnt", "--timeout", "5s", "pair", "--no"}, "--no-wait"},
		{"lmntd", []string{"lmntd", "--seal-b"}, "--seal-backend"},
	} {
		script := ". " + filepath.Join(dir, "completion", tc.file) + "\nCOMP_WORDS=(" + strings.Join(tc.words, " ") + ")\n" +
			"COMP_CWORD=" + itoa(len(tc.words)-1) + "\n_" + tc.file + "\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("%v: completions %q (%v), want %q", tc.words, out, err, tc.want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestRoffEscapes(t *testing.T) {
	for in, want := range map[string]string{`a-b`: `a\-b`, `.x`: `\&.x`, `'q`: `\&'q`, `c:\d`: `c:\ed`} {
		if got := roff(in); got != want {
			t.Errorf("roff(%q) = %q, want %q", in, got, want)
		}
	}
}

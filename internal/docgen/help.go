// Package docgen writes the manual pages lmntd(8) and lmnt(1) and the bash
// completion of both programs from their own --help output, which pflag
// renders from the flag and command definitions. Nothing here restates a
// flag or a command: a flag added to lmnt or lmntd appears in the pages and
// the completion of the next release by itself.
package docgen

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
)

// Program runs a program's main with args and writes its standard output
// to stdout; it returns the exit status.
type Program func(args []string, stdout *strings.Builder) int

// Flag is one flag as pflag's FlagUsages prints it.
type Flag struct {
	Short, Long string
	Arg         string // "string", "duration", ... ("" for booleans)
	Usage       string
}

// Help is one --help output, split into its parts.
type Help struct {
	Intro []string // paragraphs before "Usage:"
	Usage string   // the synopsis after "Usage: "
	Notes []string // paragraphs between the usage line and the flags
	Flags []Flag
	// Sections are other titled blocks ("Commands:", "Global flags:").
	Sections map[string][]string
}

// Command is one lmnt command from the command list of `lmnt --help`.
type Command struct {
	Name    string
	Summary string
	Help    *Help      // nil when the command has no --help of its own
	Subs    []*Command // keys show|import-legacy|reseal
}

// flagLine matches pflag's rendering: "  -n, --dry-run[=true|false]   text"
// or "      --timeout duration   text", and lmntd's 80-column one, where
// the text starts on the next, deeper-indented line ("  --api-listen string").
var flagLine = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([a-z0-9][a-z0-9-]*)(\[=[^\]]*\])?(?: ([a-zA-Z0-9]+))?(?:\s{2,}(.*))?$`)

// ParseHelp splits --help output. Flags come from blocks titled "Flags:"
// (and "Global flags:", kept in Sections and parsed by ParseFlags).
func ParseHelp(text string) *Help {
	h := &Help{Sections: map[string][]string{}}
	var para []string
	flush := func(into *[]string) {
		if len(para) > 0 {
			*into = append(*into, strings.Join(para, "\n"))
			para = nil
		}
	}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " ")
		switch {
		case strings.HasPrefix(line, "Usage: "):
			flush(&h.Intro)
			h.Usage = strings.TrimPrefix(line, "Usage: ")
			section = ""
		case line != "" && !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":"):
			if h.Usage == "" {
				flush(&h.Intro)
			} else {
				flush(&h.Notes)
			}
			section = strings.TrimSuffix(line, ":")
			h.Sections[section] = nil
		case section != "" && line != "":
			h.Sections[section] = append(h.Sections[section], line)
		case section != "" && line == "":
			section = ""
		case line == "":
			if h.Usage == "" {
				flush(&h.Intro)
			} else {
				flush(&h.Notes)
			}
		default:
			para = append(para, line)
		}
	}
	if h.Usage == "" {
		flush(&h.Intro)
	} else {
		flush(&h.Notes)
	}
	h.Flags = ParseFlags(h.Sections["Flags"])
	return h
}

// ParseFlags parses the lines of a flags block; a line indented deeper than
// its flag continues that flag's text.
func ParseFlags(lines []string) []Flag {
	var flags []Flag
	for _, l := range lines {
		m := flagLine.FindStringSubmatch(l)
		if m == nil {
			if len(flags) > 0 {
				flags[len(flags)-1].Usage = strings.TrimSpace(flags[len(flags)-1].Usage + " " + strings.TrimSpace(l))
			}
			continue
		}
		flags = append(flags, Flag{Short: m[1], Long: m[2], Arg: m[4], Usage: strings.TrimSpace(m[5])})
	}
	return flags
}

// subcommandList matches "show|import-legacy|reseal".
var subcommandList = regexp.MustCompile(`^[a-z][a-z-]*(\|[a-z][a-z-]*)+$`)

// Commands reads lmnt's command list and each command's own --help.
func Commands(run Program) ([]*Command, *Help, error) {
	top, err := help(run)
	if err != nil {
		return nil, nil, err
	}
	lines := top.Sections["Commands"]
	if len(lines) == 0 {
		return nil, nil, fmt.Errorf("docgen: no \"Commands:\" block in the top-level help")
	}
	var cmds []*Command
	for _, l := range lines {
		body := strings.TrimPrefix(l, "  ")
		if strings.HasPrefix(body, " ") { // continues the previous entry
			if len(cmds) > 0 {
				c := cmds[len(cmds)-1]
				c.Summary = strings.TrimSpace(c.Summary + " " + strings.TrimSpace(body))
			}
			continue
		}
		head, summary, _ := strings.Cut(body, "  ")
		words := strings.Fields(head)
		c := &Command{Name: words[0], Summary: strings.TrimSpace(summary)}
		if len(words) > 1 && subcommandList.MatchString(words[1]) {
			for _, s := range strings.Split(words[1], "|") {
				c.Subs = append(c.Subs, &Command{Name: s})
			}
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if len(c.Subs) == 0 {
			c.Help, _ = help(run, c.Name)
			continue
		}
		for _, s := range c.Subs {
			if s.Help, err = help(run, c.Name, s.Name); err != nil {
				return nil, nil, fmt.Errorf("docgen: lmnt %s %s --help: %w", c.Name, s.Name, err)
			}
		}
	}
	return cmds, top, nil
}

// help runs PROGRAM ARGS... --help; a command without a usage text of its
// own (lmnt version) gives an error.
func help(run Program, args ...string) (*Help, error) {
	var out strings.Builder
	if code := run(append(args, "--help"), &out); code != 0 {
		return nil, fmt.Errorf("exit status %d", code)
	}
	h := ParseHelp(out.String())
	if h.Usage == "" {
		return nil, fmt.Errorf("no usage line in:\n%s", out.String())
	}
	return h, nil
}

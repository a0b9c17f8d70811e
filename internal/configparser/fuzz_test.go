package configparser

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checker verifies, event by event, what configparser guarantees whatever
// the input: lines are reported in order and in range, section names come
// from "[...]" lines, option names are lower-case and trimmed, values carry
// no trailing whitespace, refusals carry the line without its comment.
type checker struct {
	t     *testing.T
	lines []Line
	last  int
}

func (c *checker) at(kind string, at int) {
	if at < 0 || at >= len(c.lines) || at < c.last {
		c.t.Fatalf("%s at line %d (previous event at %d, %d lines)", kind, at, c.last, len(c.lines))
	}
	c.last = at
}

func (c *checker) Section(name string, at int) {
	c.at("section", at)
	if name == "" || !strings.HasPrefix(strings.TrimSpace(c.lines[at].Text), "["+name+"]") {
		c.t.Fatalf("section %q from line %q", name, c.lines[at].Text)
	}
}

func (c *checker) Option(name, value string, at int) {
	c.at("option", at)
	if name == "" || name != strings.ToLower(name) || name != strings.TrimRight(name, " \t") {
		c.t.Fatalf("option name %q from line %q", name, c.lines[at].Text)
	}
	if value != strings.TrimRight(value, " \t\r\n\v\f") {
		c.t.Fatalf("option %s value %q keeps trailing whitespace", name, value)
	}
}

func (c *checker) Refused(p Problem, text string, at int) bool {
	c.at("refusal", at)
	if p != OutsideSection && p != NotAnOption {
		c.t.Fatalf("unknown problem %d", p)
	}
	if text == "" || !strings.Contains(c.lines[at].Text, text) {
		c.t.Fatalf("refused %q, not part of line %q", text, c.lines[at].Text)
	}
	return true
}

// FuzzRead feeds arbitrary text, split and commented the way Klipper's
// reader does ("#" or ";" starts a comment), to Read. Seeds: the repo's
// printer.cfg fixtures and the corpus in testdata/fuzz/FuzzRead.
func FuzzRead(f *testing.F) {
	seeds, _ := filepath.Glob("../compat/testdata/*/*.cfg")
	more, _ := filepath.Glob("../klippercfg/testdata/*/*/*.cfg")
	for _, p := range append(seeds, more...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("[printer]\nkinematics: corexy\n  continued\n\n  after blank\n[x]y\nstray\n")
	f.Fuzz(func(t *testing.T, text string) {
		var in []Line
		for _, l := range strings.Split(text, "\n") {
			in = append(in, Line{Text: l, CommentAt: strings.IndexAny(l, "#;")})
		}
		if !Read(in, &checker{t: t, lines: in}) {
			t.Fatal("Read stopped although the handler went on")
		}
	})
}

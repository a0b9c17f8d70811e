package config

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/configparser"
)

// moonrakerSection is the old plugin's section in moonraker.conf.
const moonrakerSection = "lmnt_marketplace_plugin"

// iniOption is one option of a configparser-style file.
type iniOption struct {
	Name  string
	Value string
	Line  int
}

// iniSection is one [section]; repeated sections merge, later options win.
type iniSection struct {
	Name    string
	Line    int
	Options map[string]*iniOption
}

// iniSyntaxError is a line configparser would refuse.
type iniSyntaxError struct {
	Line int
	Msg  string
}

func (e *iniSyntaxError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

var (
	// Moonraker cuts an inline comment at spaces followed by # or ;.
	moonrakerInlineComment = regexp.MustCompile(` +[#;]`)
	// ... and un-escapes " \#" and " \;".
	moonrakerEscapedPrefix = regexp.MustCompile(` \\([#;])`)
	// Moonraker's section regex (header up to the first "]").
	moonrakerSectionRE = regexp.MustCompile(`^\s*\[([^]]+)\]`)
)

// srcLine is one line handed to the configparser core, with its line number.
type srcLine struct {
	text string
	line int
}

// parseMoonrakerConf reads moonraker.conf the way Moonraker's FileSourceWrapper
// does: whole-line comments and blank lines dropped, tabs expanded to 4,
// inline comments cut at " #"/" ;" (escaped " \#" kept), [include ...]
// recorded but not followed, the rest parsed by Python's configparser rules
// (case-insensitive option names, "key: value" or "key = value", indented
// continuation lines).
func parseMoonrakerConf(data []byte) (sections map[string]*iniSection, includes []string, err error) {
	sections = map[string]*iniSection{}
	var buf []srcLine
	flush := func() error {
		e := configparserRead(buf, sections)
		buf = buf[:0]
		return e
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	optIndent := -1
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			continue
		}
		line = expandTabs(line, 4)
		if loc := moonrakerInlineComment.FindStringIndex(line); loc != nil {
			line = line[:loc[0]]
		}
		line = moonrakerEscapedPrefix.ReplaceAllString(line, " $1")
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if optIndent != -1 && indent > optIndent {
			buf = append(buf, srcLine{line, n})
			continue
		}
		if m := moonrakerSectionRE.FindStringSubmatch(line); m != nil {
			optIndent = -1
			if strings.HasPrefix(m[1], "include ") {
				if e := flush(); e != nil {
					return nil, nil, e
				}
				includes = append(includes, strings.TrimSpace(m[1][len("include "):]))
				continue
			}
		} else {
			optIndent = indent
		}
		buf = append(buf, srcLine{line, n})
	}
	if e := sc.Err(); e != nil {
		return nil, nil, e
	}
	if e := flush(); e != nil {
		return nil, nil, e
	}
	return sections, includes, nil
}

// configparserRead parses one buffer (one read_string call, comments
// already removed) into sections; the first line configparser refuses is the
// error.
func configparserRead(lines []srcLine, sections map[string]*iniSection) error {
	in := make([]configparser.Line, len(lines))
	for i, l := range lines {
		in[i] = configparser.Line{Text: l.text, CommentAt: -1}
	}
	r := &iniReader{lines: lines, sections: sections}
	configparser.Read(in, r)
	return r.err
}

// iniReader collects what configparser reads into sections.
type iniReader struct {
	lines    []srcLine
	sections map[string]*iniSection
	cur      *iniSection
	err      error
}

func (r *iniReader) Section(name string, at int) {
	s, ok := r.sections[name]
	if !ok {
		s = &iniSection{Name: name, Line: r.lines[at].line, Options: map[string]*iniOption{}}
		r.sections[name] = s
	}
	r.cur = s
}

func (r *iniReader) Option(name, value string, at int) {
	r.cur.Options[name] = &iniOption{Name: name, Value: value, Line: r.lines[at].line}
}

func (r *iniReader) Refused(problem configparser.Problem, text string, at int) bool {
	msg := "option outside any [section]"
	if problem == configparser.NotAnOption {
		msg = fmt.Sprintf("not an option line (want \"key: value\"): %q", text)
	}
	r.err = &iniSyntaxError{Line: r.lines[at].line, Msg: msg}
	return false
}

// expandTabs is Python's str.expandtabs.
func expandTabs(s string, size int) string {
	if !strings.Contains(s, "\t") {
		return s
	}
	var b strings.Builder
	col := 0
	for _, r := range s {
		if r == '\t' {
			n := size - col%size
			b.WriteString(strings.Repeat(" ", n))
			col += n
			continue
		}
		b.WriteRune(r)
		col++
	}
	return b.String()
}

// parsePythonBool is configparser's getboolean.
func parsePythonBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

// moonrakerImport maps one old-plugin option to an lmntd key. convert
// returns the textual value for the key, or use=false when nothing is to be
// imported; note (optional) says how an odd value was read; err means the
// value has no sane meaning (it is then not imported, and reported).
type moonrakerImport struct {
	option  string
	key     string
	convert func(string) (value string, use bool, note string, err error)
}

func importAsIs(s string) (string, bool, string, error) { return s, true, "", nil }

// importCheckInterval reads check_interval the way the old plugin meant
// it: whole seconds, and anything not above 0 disables polling (its
// installer and README write 0: push only). A positive value outside
// lmntd's range is clamped to it.
func importCheckInterval(s string) (string, bool, string, error) {
	secs, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return "", false, "", fmt.Errorf("check_interval %q is not a number of seconds", s)
	}
	d := time.Duration(secs * float64(time.Second))
	switch {
	case secs <= 0:
		note := ""
		if secs < 0 {
			note = fmt.Sprintf("check_interval %s disabled polling in the old plugin: read as 0 (push only, safety poll every 5 min)", s)
		}
		return "0s", true, note, nil
	case d < MinCheckInterval:
		return MinCheckInterval.String(), true, fmt.Sprintf("check_interval %s is below lmntd's floor: polling every %s", s, MinCheckInterval), nil
	case d > MaxCheckInterval:
		return MaxCheckInterval.String(), true, fmt.Sprintf("check_interval %s is above lmntd's ceiling: polling every %s", s, MaxCheckInterval), nil
	}
	return d.String(), true, "", nil
}

var moonrakerImports = []moonrakerImport{
	{"marketplace_url", "marketplace.url", importAsIs},
	{"cws_url", "marketplace.cws_url", importAsIs},
	{"firebase_project_id", "push.firebase_project_id", importAsIs},
	{"check_interval", "marketplace.check_interval", importCheckInterval},
	{"debug_mode", "log.level", func(s string) (string, bool, string, error) {
		// debug_mode made the old plugin verbose (and log tokens, which
		// lmntd never does); off is simply lmntd's default.
		on, err := parsePythonBool(s)
		if err != nil {
			return "", false, "", fmt.Errorf("debug_mode %q is not a boolean (true/false, yes/no, on/off, 1/0)", s)
		}
		return "debug", on, "", nil
	}},
	{"development_mode", "development_mode", func(s string) (string, bool, string, error) {
		on, err := parsePythonBool(s)
		if err != nil {
			return "", false, "", fmt.Errorf("development_mode %q is not a boolean (true/false, yes/no, on/off, 1/0)", s)
		}
		return strconv.FormatBool(on), true, "", nil
	}},
}

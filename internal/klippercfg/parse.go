// Package klippercfg reads Klipper's printer.cfg the way Klipper does
// ([include] globs relative to the including file, the SAVE_CONFIG block,
// Python configparser syntax), checks that the sections lmntd depends on are
// in place ([encrypted_file_bridge], [secure_print], [virtual_sdcard] and the
// SDCARD_PRINT_FILE macro), extracts what the job compatibility check needs
// (nozzle diameter, axis limits, kinematics), and watches the whole include
// tree for edits. Problems are structured findings for lmnt doctor, the
// status endpoint and the service STATUS line.
package klippercfg

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lmnt-marketplace/lmntd/internal/configparser"
)

// Limits that keep a hostile or broken tree from costing much: Klipper's own
// configs are a few hundred KiB at most.
const (
	maxFileSize     = 4 << 20
	maxIncludeDepth = 32
	maxFiles        = 512
)

// The header Klipper writes above the SAVE_CONFIG block (autosave).
var autosaveHeader = []string{
	"#*# <---------------------- SAVE_CONFIG ---------------------->",
	"#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.",
	"#*#",
}

// Location is a line in a file of the include tree.
type Location struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

func (l Location) String() string {
	if l.Line == 0 {
		return l.File
	}
	return fmt.Sprintf("%s:%d", l.File, l.Line)
}

// Option is one "name: value" of a section.
type Option struct {
	Name  string   `json:"name"`
	Value string   `json:"value"`
	Loc   Location `json:"location"`
	// SaveConfig is true when the value came from the SAVE_CONFIG block.
	SaveConfig bool `json:"save_config,omitempty"`
}

// Section is one [section]; sections repeated across files merge and later
// options win, as in Klipper.
type Section struct {
	Name    string   `json:"name"`
	Loc     Location `json:"location"`
	options map[string]*Option
	order   []string
}

// Option returns the named option (names are case-insensitive).
func (s *Section) Option(name string) (*Option, bool) {
	o, ok := s.options[strings.ToLower(name)]
	return o, ok
}

// Options returns the options in the order they first appeared.
func (s *Section) Options() []*Option {
	out := make([]*Option, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.options[n])
	}
	return out
}

// Include is one [include ...] directive and the files it matched.
type Include struct {
	Spec    string   `json:"spec"`
	Pattern string   `json:"pattern"`
	Loc     Location `json:"location"`
	Matches []string `json:"matches"`
}

// Config is a parsed include tree.
type Config struct {
	// Path is the main printer.cfg.
	Path string
	// Files are all files read, main file first, in include order.
	Files []string
	// Includes are every include directive.
	Includes []Include
	// Problems are what Klipper would refuse or warn about while reading
	// (missing includes, recursion, syntax, a damaged SAVE_CONFIG block).
	Problems []Finding

	sections map[string]*Section
	order    []string
	contents map[string][]byte
}

// Section returns the named section (names are case-sensitive, as in Klipper).
func (c *Config) Section(name string) (*Section, bool) {
	s, ok := c.sections[name]
	return s, ok
}

// Sections returns all sections in the order they first appeared.
func (c *Config) Sections() []*Section {
	out := make([]*Section, 0, len(c.order))
	for _, n := range c.order {
		out = append(out, c.sections[n])
	}
	return out
}

// srcLine is one line of input with where it came from.
type srcLine struct {
	text       string
	loc        Location
	saveConfig bool
}

// Parse reads path and everything it includes. It never fails: a missing or
// unreadable printer.cfg, bad includes and syntax errors are reported in
// Config.Problems.
func Parse(path string) *Config {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	cache := map[string][]byte{}
	data, err := readConfigFile(path, cache)
	if err != nil {
		c := newConfig(path, cache)
		c.Problems = append(c.Problems, Finding{
			Severity: SeverityError, Code: CodeConfigUnreadable, File: path,
			Message: "cannot read Klipper's config: " + err.Error(),
			Fix:     "check klipper.config_file in lmntd.toml, and that lmntd may read it (`lmnt setup` grants access)",
		})
		return c
	}
	lines := splitLines(path, data)
	regular, autosave, autosaveProblems := splitAutosave(path, lines)
	if len(autosave) == 0 {
		c := parseTree(path, regular, cache)
		c.Problems = append(autosaveProblems, c.Problems...)
		return c
	}
	// Klipper drops SAVE_CONFIG options the regular config also sets
	// (_strip_duplicates), then parses the regular lines and the block as one.
	base := parseTree(path, regular, cache)
	kept, dupProblems := stripDuplicates(autosave, base)
	c := parseTree(path, append(append([]srcLine(nil), regular...), kept...), cache)
	c.Problems = append(append(autosaveProblems, dupProblems...), c.Problems...)
	return c
}

func newConfig(path string, cache map[string][]byte) *Config {
	return &Config{Path: path, sections: map[string]*Section{}, contents: cache}
}

// readConfigFile reads one file of the tree (once per Parse).
func readConfigFile(path string, cache map[string][]byte) ([]byte, error) {
	if b, ok := cache[path]; ok {
		return b, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, unwrapPathError(err)
	}
	if st.IsDir() {
		return nil, errors.New("is a directory")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, unwrapPathError(err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("larger than %d MiB", maxFileSize>>20)
	}
	cache[path] = b
	return b, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func splitLines(path string, data []byte) []srcLine {
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	raw := strings.Split(text, "\n")
	out := make([]srcLine, len(raw))
	for i, l := range raw {
		out[i] = srcLine{text: l, loc: Location{File: path, Line: i + 1}}
	}
	return out
}

// splitAutosave separates the SAVE_CONFIG block as Klipper's
// _find_autosave_data does: the block's lines lose their "#*# " prefix; a
// block that was edited by hand, or "#*# " lines above the header, make
// Klipper ignore the block (it then stays a comment).
func splitAutosave(path string, lines []srcLine) (regular, autosave []srcLine, problems []Finding) {
	h := -1
	for i := 1; i+len(autosaveHeader)-1 < len(lines); i++ {
		if lines[i].text == autosaveHeader[0] && lines[i+1].text == autosaveHeader[1] && lines[i+2].text == autosaveHeader[2] {
			h = i
			break
		}
	}
	end := len(lines)
	if h >= 0 {
		end = h
	}
	for _, l := range lines[:end] {
		if strings.HasPrefix(l.text, "#*# ") {
			return lines, nil, []Finding{{
				Severity: SeverityWarning, Code: CodeSaveConfigCorrupt, File: path, Line: l.loc.Line,
				Message: "a \"#*# \" line above the SAVE_CONFIG block: Klipper ignores the whole block",
				Fix:     "move SAVE_CONFIG lines back below the SAVE_CONFIG header, or remove the stray line",
			}}
		}
	}
	if h < 0 {
		return lines, nil, nil
	}
	block := lines[h+len(autosaveHeader):]
	for len(block) > 0 && strings.TrimSpace(block[0].text) == "" {
		block = block[1:]
	}
	for len(block) > 0 && strings.TrimSpace(block[len(block)-1].text) == "" {
		block = block[:len(block)-1]
	}
	for _, l := range block {
		t := strings.TrimRight(l.text, " \t")
		if !strings.HasPrefix(t, "#*#") || (len(t) >= 4 && !strings.HasPrefix(t, "#*# ")) {
			return lines, nil, []Finding{{
				Severity: SeverityWarning, Code: CodeSaveConfigCorrupt, File: path, Line: l.loc.Line,
				Message: "the SAVE_CONFIG block was edited (a line without the \"#*# \" prefix): Klipper ignores the whole block",
				Fix:     "restore the \"#*# \" prefix or move the line above the SAVE_CONFIG header",
			}}
		}
		content := ""
		if len(t) >= 4 {
			content = t[4:]
		}
		autosave = append(autosave, srcLine{text: content, loc: l.loc, saveConfig: true})
	}
	return lines[:h], autosave, nil
}

// stripDuplicates comments out SAVE_CONFIG options that the regular config
// also sets, as Klipper does (the regular value wins, and SAVE_CONFIG will
// refuse to run until one of them is removed).
func stripDuplicates(block []srcLine, regular *Config) ([]srcLine, []Finding) {
	out := make([]srcLine, len(block))
	copy(out, block)
	var problems []Finding
	var section string
	dup := false
	for i, l := range out {
		pruned := l.text
		if j := strings.IndexAny(pruned, "#;"); j >= 0 {
			pruned = pruned[:j]
		}
		pruned = strings.TrimRight(pruned, " \t")
		if pruned == "" {
			continue
		}
		if pruned[0] == ' ' || pruned[0] == '\t' {
			if dup {
				out[i].text = "#" + l.text
			}
			continue
		}
		dup = false
		if pruned[0] == '[' {
			section = strings.TrimSpace(strings.TrimSuffix(pruned[1:], "]"))
			continue
		}
		name := pruned
		if j := strings.IndexFunc(name, func(r rune) bool {
			return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}); j >= 0 {
			name = name[:j]
		}
		if s, ok := regular.sections[section]; ok {
			if o, ok := s.Option(name); ok {
				dup = true
				out[i].text = "#" + l.text
				problems = append(problems, Finding{
					Severity: SeverityWarning, Code: CodeSaveConfigDuplicate, Section: section,
					File: l.loc.File, Line: l.loc.Line,
					Message: fmt.Sprintf("%s is set both at %s and in the SAVE_CONFIG block: Klipper uses %s and SAVE_CONFIG will fail", name, o.Loc, o.Loc),
					Fix:     fmt.Sprintf("remove %s from [%s] at %s (or from the SAVE_CONFIG block)", name, section, o.Loc),
				})
			}
		}
	}
	return out, problems
}

// treeParser walks the include tree of one parse.
type treeParser struct {
	c       *Config
	visited map[string]bool
	seen    map[string]bool
}

func parseTree(path string, lines []srcLine, cache map[string][]byte) *Config {
	p := &treeParser{c: newConfig(path, cache), visited: map[string]bool{}, seen: map[string]bool{}}
	p.addFile(path)
	p.parse(path, lines, 0)
	return p.c
}

func (p *treeParser) addFile(path string) {
	if !p.seen[path] {
		p.seen[path] = true
		p.c.Files = append(p.c.Files, path)
	}
}

func (p *treeParser) problem(sev Severity, code string, loc Location, msg, fix string) {
	p.c.Problems = append(p.c.Problems, Finding{Severity: sev, Code: code, File: loc.File, Line: loc.Line, Message: msg, Fix: fix})
}

// parse is Klipper's _parse_config: "#" starts a comment anywhere, an
// "[include ...]" line (at column 0) splices in other files, and the lines
// between includes are read by configparser as one unit.
func (p *treeParser) parse(path string, lines []srcLine, depth int) {
	p.visited[path] = true
	defer delete(p.visited, path)
	var buf []srcLine
	for _, l := range lines {
		if i := strings.IndexByte(l.text, '#'); i >= 0 {
			l.text = l.text[:i]
		}
		if m := configparser.SectionRE.FindStringSubmatch(l.text); m != nil && strings.HasPrefix(m[1], "include ") {
			p.read(buf)
			buf = nil
			p.include(path, strings.TrimSpace(m[1][len("include "):]), l.loc, depth)
			continue
		}
		buf = append(buf, l)
	}
	p.read(buf)
}

// include is Klipper's _resolve_include.
func (p *treeParser) include(from, spec string, loc Location, depth int) {
	pattern := spec
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(filepath.Dir(from), spec)
	}
	inc := Include{Spec: spec, Pattern: pattern, Loc: loc}
	matches, err := filepath.Glob(pattern)
	if err != nil {
		p.problem(SeverityError, CodeIncludeBad, loc, fmt.Sprintf("[include %s]: bad pattern: %v", spec, err), "fix the include pattern")
		p.c.Includes = append(p.c.Includes, inc)
		return
	}
	matches = dropHidden(pattern, matches)
	sort.Strings(matches)
	inc.Matches = matches
	p.c.Includes = append(p.c.Includes, inc)
	if len(matches) == 0 && !hasMagic(pattern) {
		p.problem(SeverityError, CodeIncludeMissing, loc,
			fmt.Sprintf("[include %s]: %s does not exist; Klipper will not start", spec, pattern),
			"create the file or remove the include (a pattern like macros/*.cfg may match nothing)")
		return
	}
	for _, m := range matches {
		if len(p.c.Files) >= maxFiles {
			p.problem(SeverityError, CodeIncludeBad, loc, fmt.Sprintf("more than %d included files", maxFiles), "reduce the include tree")
			return
		}
		if p.visited[m] {
			p.problem(SeverityError, CodeIncludeRecursive, loc,
				fmt.Sprintf("[include %s] includes %s again while reading it; Klipper will not start", spec, m),
				"remove the include that closes the loop")
			continue
		}
		if depth+1 > maxIncludeDepth {
			p.problem(SeverityError, CodeIncludeRecursive, loc,
				fmt.Sprintf("includes nested deeper than %d levels at %s", maxIncludeDepth, m), "remove the include that closes the loop")
			continue
		}
		data, err := readConfigFile(m, p.c.contents)
		if err != nil {
			p.problem(SeverityError, CodeIncludeUnreadable, loc,
				fmt.Sprintf("[include %s]: cannot read %s: %v", spec, m, err),
				"make the file readable (Klipper cannot start without it either)")
			continue
		}
		p.addFile(m)
		p.parse(m, splitLines(m, data), depth+1)
	}
}

// hasMagic is Python's glob.has_magic.
func hasMagic(s string) bool { return strings.ContainsAny(s, "*?[") }

// dropHidden removes dot-files a wildcard matched: Python's glob does not
// match them unless the pattern itself starts with a dot.
func dropHidden(pattern string, matches []string) []string {
	base := filepath.Base(pattern)
	if !hasMagic(base) || strings.HasPrefix(base, ".") {
		return matches
	}
	out := matches[:0]
	for _, m := range matches {
		if !strings.HasPrefix(filepath.Base(m), ".") {
			out = append(out, m)
		}
	}
	return out
}

// read is RawConfigParser._read (strict=False, inline_comment_prefixes
// ";" and "#") for one buffer: each buffer starts outside any section.
func (p *treeParser) read(lines []srcLine) {
	in := make([]configparser.Line, len(lines))
	for i, l := range lines {
		commentAt := inlineComment(l.text)
		if t := strings.TrimSpace(l.text); strings.HasPrefix(t, ";") || strings.HasPrefix(t, "#") {
			commentAt = 0
		}
		in[i] = configparser.Line{Text: l.text, CommentAt: commentAt}
	}
	configparser.Read(in, &treeReader{p: p, lines: lines})
}

// treeReader adds what configparser reads from one file to the tree.
type treeReader struct {
	p     *treeParser
	lines []srcLine
	cur   *Section
}

func (r *treeReader) Section(name string, at int) {
	s, ok := r.p.c.sections[name]
	if !ok {
		s = &Section{Name: name, Loc: r.lines[at].loc, options: map[string]*Option{}}
		r.p.c.sections[name] = s
		r.p.c.order = append(r.p.c.order, name)
	}
	r.cur = s
}

func (r *treeReader) Option(name, value string, at int) {
	if _, exists := r.cur.options[name]; !exists {
		r.cur.order = append(r.cur.order, name)
	}
	l := r.lines[at]
	r.cur.options[name] = &Option{Name: name, Value: value, Loc: l.loc, SaveConfig: l.saveConfig}
}

func (r *treeReader) Refused(problem configparser.Problem, text string, at int) bool {
	if problem == configparser.OutsideSection {
		r.p.problem(SeverityError, CodeSyntax, r.lines[at].loc, fmt.Sprintf("option %q outside any [section]; Klipper will not start", text),
			"put it below the [section] it belongs to (after an [include] a new section must start)")
	} else {
		r.p.problem(SeverityError, CodeSyntax, r.lines[at].loc, fmt.Sprintf("%q is not an option line; Klipper will not start", text),
			`write "name: value", or indent it to continue the previous option`)
	}
	return true
}

// inlineComment finds a ";" or "#" that starts the line or follows
// whitespace, as configparser's inline_comment_prefixes do.
func inlineComment(s string) int {
	for i := 0; i < len(s); i++ {
		if (s[i] == ';' || s[i] == '#') && (i == 0 || isSpace(s[i-1])) {
			return i
		}
	}
	return -1
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

// fingerprint identifies the exact bytes of the tree that was read, so a
// watcher reports only real changes.
func (c *Config) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	for _, f := range c.Files {
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(c.contents[f]))
		h.Write(c.contents[f])
	}
	for _, inc := range c.Includes {
		fmt.Fprintf(h, "%s\x00%s\x00", inc.Pattern, strings.Join(inc.Matches, "\x00"))
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

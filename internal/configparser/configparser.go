// Package configparser reads text the way Python's RawConfigParser._read
// does, the dialect of both Klipper's printer.cfg and Moonraker's
// moonraker.conf: [section] headers, "key: value" or "key = value",
// indented continuation lines, blank lines kept inside multi-line values,
// option names lower-cased, repeated sections merged. Comments differ
// between Klipper and Moonraker, so each caller finds them itself.
package configparser

import (
	"regexp"
	"strings"
)

var (
	// SectionRE is configparser's SECTCRE (greedy: the header runs up to
	// the last "]").
	SectionRE = regexp.MustCompile(`^\[(.+)\]`)
	// optionRE is configparser's OPTCRE with the delimiters "=" and ":".
	optionRE = regexp.MustCompile(`^(.*?)\s*([=:])\s*(.*)$`)
)

// Line is one line of input.
type Line struct {
	// Text is the whole line: its indentation decides whether it continues
	// the previous option.
	Text string
	// CommentAt is where a comment starts in Text, or -1 for none.
	CommentAt int
}

// Problem is a line configparser refuses.
type Problem int

const (
	// OutsideSection: an option before any [section] header.
	OutsideSection Problem = iota
	// NotAnOption: a line that is neither a header nor "key: value".
	NotAnOption
)

// Handler receives what Read finds; at is the index of the line in the
// slice given to Read.
type Handler interface {
	Section(name string, at int)
	// Option is called once the option's value is complete (after its
	// continuation lines).
	Option(name, value string, at int)
	// Refused reports a line configparser refuses; text is the line without
	// its comment. Returning false stops Read (Moonraker fails at once;
	// Klipper's config check goes on to find every problem).
	Refused(p Problem, text string, at int) (goOn bool)
}

// Read parses lines, reporting to h. It returns false if h stopped it.
func Read(lines []Line, h Handler) bool {
	inSection := false
	optAt := -1 // the line of the option whose value is being read
	var name string
	var parts []string
	indentLevel := 0
	finish := func() {
		if optAt >= 0 {
			h.Option(name, strings.TrimRight(strings.Join(parts, "\n"), " \t\r\n\v\f"), optAt)
		}
		optAt, parts = -1, nil
	}
	for i, l := range lines {
		value := l.Text
		if l.CommentAt >= 0 {
			value = value[:l.CommentAt]
		}
		value = strings.TrimSpace(value)
		if value == "" {
			// empty_lines_in_values: a blank line (not a comment) stays
			// inside a multi-line value.
			if l.CommentAt < 0 && optAt >= 0 {
				parts = append(parts, "")
			}
			continue
		}
		indent := len(l.Text) - len(strings.TrimLeft(l.Text, " \t\v\f\r"))
		if optAt >= 0 && indent > indentLevel {
			parts = append(parts, value)
			continue
		}
		indentLevel = indent
		if m := SectionRE.FindStringSubmatch(value); m != nil {
			finish()
			inSection = true
			h.Section(m[1], i)
			continue
		}
		if !inSection {
			if !h.Refused(OutsideSection, value, i) {
				return false
			}
			continue
		}
		m := optionRE.FindStringSubmatch(value)
		if m == nil || strings.TrimSpace(m[1]) == "" {
			finish()
			if !h.Refused(NotAnOption, value, i) {
				return false
			}
			continue
		}
		finish()
		optAt, name = i, strings.ToLower(strings.TrimRight(m[1], " \t"))
		parts = []string{strings.TrimSpace(m[3])}
	}
	finish()
	return true
}

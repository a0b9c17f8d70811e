package setup

import (
	"strconv"
	"strings"
)

// lmntd.toml is the owner's file (a dpkg conffile): setup changes only the
// lines of the keys it sets, in place, so comments and the owner's other
// settings stay as they are.

// tomlEdit records one line setup wrote, and what was there before.
type tomlEdit struct {
	Key      string `json:"key"`                // "klipper.user"
	Line     string `json:"line"`               // the line written
	Previous string `json:"previous,omitempty"` // the line replaced; "" when inserted
}

// setTOMLKey sets key (in section) to a quoted string value. It returns the
// new text and the edit, or ok=false when the key already has that value.
func setTOMLKey(text, section, key, value string) (string, tomlEdit, bool) {
	line := key + " = " + strconv.Quote(value)
	edit := tomlEdit{Key: section + "." + key, Line: line}
	lines := strings.Split(text, "\n")
	start, end := sectionBounds(lines, section)
	if start < 0 {
		// No such section: append it.
		text = strings.TrimRight(text, "\n")
		if text != "" {
			text += "\n\n"
		}
		return text + "[" + section + "]\n" + line + "\n", edit, true
	}
	commented := -1
	for i := start + 1; i < end; i++ {
		t := strings.TrimSpace(lines[i])
		if k, v, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == key {
			if unq, err := strconv.Unquote(strings.TrimSpace(stripTOMLComment(v))); err == nil && unq == value {
				return text, edit, false
			}
			edit.Previous = lines[i]
			lines[i] = line
			return strings.Join(lines, "\n"), edit, true
		}
		if c, ok := strings.CutPrefix(t, "#"); ok && commented < 0 {
			if k, _, ok := strings.Cut(c, "="); ok && strings.TrimSpace(k) == key {
				commented = i
			}
		}
	}
	at := start + 1
	if commented >= 0 {
		at = commented + 1 // right under its documented default
	}
	lines = append(lines[:at], append([]string{line}, lines[at:]...)...)
	return strings.Join(lines, "\n"), edit, true
}

// undoTOMLEdit reverts edit if the line is still the one setup wrote.
func undoTOMLEdit(text string, edit tomlEdit) (string, bool) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if l != edit.Line {
			continue
		}
		if edit.Previous != "" {
			lines[i] = edit.Previous
		} else {
			lines = append(lines[:i], lines[i+1:]...)
		}
		return strings.Join(lines, "\n"), true
	}
	return text, false
}

// sectionBounds returns the header line of [section] and the line where the
// next section starts (or len(lines)).
func sectionBounds(lines []string, section string) (int, int) {
	start := -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "[") {
			continue
		}
		name := strings.TrimSpace(strings.Trim(stripTOMLComment(t), "[] "))
		if start >= 0 {
			return start, i
		}
		if name == section {
			start = i
		}
	}
	return start, len(lines)
}

// stripTOMLComment drops a trailing comment outside a basic string.
func stripTOMLComment(s string) string {
	inString := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inString {
				i++
			}
		case '"':
			inString = !inString
		case '#':
			if !inString {
				return strings.TrimSpace(s[:i])
			}
		}
	}
	return strings.TrimSpace(s)
}

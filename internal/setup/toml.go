package setup

import "strings"

// Before lmntd.toml.d, setup edited the lines of klipper.user and
// klipper.config_file in lmntd.toml itself and recorded each edit in
// setup.json; --remove still undoes those on hosts set up that way.

// tomlEdit records one line an older setup wrote, and what was there before.
type tomlEdit struct {
	Key      string `json:"key"`                // "klipper.user"
	Line     string `json:"line"`               // the line written
	Previous string `json:"previous,omitempty"` // the line replaced; "" when inserted
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

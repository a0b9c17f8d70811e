package gcode

import (
	"strings"
	"testing"
)

// TestCommentRulesReachable checks the table's rule: a comment ends at its
// first matching rule, so a rule whose prefix begins with an earlier rule's
// prefix would never run. Comments are trimmed, so a prefix starting with a
// blank (or a whole comment ending in one) would never match either.
func TestCommentRulesReachable(t *testing.T) {
	for j, r := range commentRules {
		if r.slicer == "" || r.prefix == "" || r.set == nil {
			t.Errorf("rule %d %q: slicer, prefix and setter are required", j, r.prefix)
		}
		if strings.TrimLeft(r.prefix, " \t") != r.prefix || r.whole && strings.TrimSpace(r.prefix) != r.prefix {
			t.Errorf("rule %q (%s) can never match a trimmed comment", r.prefix, r.slicer)
		}
		for _, earlier := range commentRules[:j] {
			if !earlier.whole && strings.HasPrefix(r.prefix, earlier.prefix) ||
				earlier.whole && r.whole && earlier.prefix == r.prefix {
				t.Errorf("rule %q (%s) is shadowed by the earlier %q (%s)", r.prefix, r.slicer, earlier.prefix, earlier.slicer)
			}
		}
	}
}

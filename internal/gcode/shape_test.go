package gcode

import (
	"bytes"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// TestFixtureLinesAllShaped backs the budget's premise: every line real
// slicers write is G-code-shaped.
func TestFixtureLinesAllShaped(t *testing.T) {
	total := 0
	for _, f := range testutil.Fixtures(t) {
		in := NewInspector(Options{})
		for n, line := range bytes.Split(f.Bytes(t), []byte("\n")) {
			total++
			line = bytes.TrimSuffix(line, []byte("\r"))
			if !in.inspectLine(line[:min(len(line), linePrefixCap)], len(line) > linePrefixCap, true) {
				t.Errorf("%s line %d is not G-code-shaped", f.Name, n+1)
			}
		}
	}
	t.Logf("%d fixture lines, all G-code-shaped", total)
}

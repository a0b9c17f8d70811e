package textsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"Benchy 0.2mm PLA":              "Benchy 0.2mm PLA",
		"invoice\u202Eedoc.gcode":       "invoiceedoc.gcode", // right-to-left override
		"a\u2066b\u2067c\u2068d\u2069e": "abcde",             // isolates
		"x\u200Ey\u200Fz\u061C!":        "xyz!",              // marks
		"\x1b[2J\x1b]0;owned\x07Cube":   "[2J]0;ownedCube",   // terminal escapes lose their ESC/BEL
		"line1\nINFO forged log line":   "line1 INFO forged log line",
		"tab\there\r\n\r\nend":          "tab here end",
		"c1\u0085\u009bcontrols":        "c1controls",
		"bad\xffutf8":                   "badutf8",
		"  padded  ":                    "padded",
		"para\u2029graph\u2028sep":      "para graph sep",
		"Würfel 🧊 — 立方体":                "Würfel 🧊 — 立方体",
		"emoji zwj 👩\u200D🔧 stays":      "emoji zwj 👩\u200D🔧 stays",
		"\u202E":                        "",
		"del\x7fchar":                   "delchar",
		"nul\x00byte":                   "nulbyte",
		"שלום abc":                      "שלום abc", // right-to-left text itself is fine
	} {
		if got := Clean(in, 0); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Clean("ééé", 5); got != "éé" {
		t.Errorf("cut inside a character: %q", got)
	}
	if got := Clean(strings.Repeat("a", 300), 200); len(got) != 200 {
		t.Errorf("not bounded: %d bytes", len(got))
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "a\u202Eb", "\xff\xfe", "x\ny", " \t ", "ééé"} {
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		out := Clean(s, max)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		if max > 0 && len(out) > max {
			t.Fatalf("%d bytes over the limit %d", len(out), max)
		}
		if Clean(out, max) != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, Clean(out, max))
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202E' || r == '\u2066' {
				t.Fatalf("%q survived in %q", r, out)
			}
		}
	})
}

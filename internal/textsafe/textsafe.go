// Package textsafe cleans text that comes from outside lmntd (the
// marketplace, local API callers, G-code comments, Klipper) before it is
// stored or shown in a terminal, a log, the pairing page or the console:
// control characters could rewrite a terminal or forge log lines, and bidi
// controls (U+202E and friends) make "invoice‮edoc.gcode" read as something
// else.
package textsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s as one line of plain text: invalid UTF-8 dropped, C0/C1
// control characters and DEL removed (tabs and line breaks, U+2028 and
// U+2029 included, become one space), bidi formatting characters removed,
// outer space trimmed, and at most maxBytes bytes (cut at a character
// boundary; maxBytes ≤ 0: no limit).
func Clean(s string, maxBytes int) string {
	if isClean(s) && (maxBytes <= 0 || len(s) <= maxBytes) {
		return s // the common case allocates nothing
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range strings.ToValidUTF8(s, "") {
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029':
			space = true
			continue
		case unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Bidi_Control, r):
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := strings.TrimSpace(b.String())
	if maxBytes > 0 && len(out) > maxBytes {
		cut := maxBytes
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimSpace(out[:cut])
	}
	return out
}

// isClean reports whether Clean would leave s as it is (length aside).
func isClean(s string) bool {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		case r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029':
			return false
		case r >= 0x80 && (unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Bidi_Control, r)):
			return false
		}
	}
	return s == strings.TrimSpace(s)
}

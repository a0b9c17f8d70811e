package gcode

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// SWAR masks: one bit per byte of a little-endian 64-bit word.
const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// utf8Checker validates UTF-8 and the absence of NUL bytes across Write
// boundaries. A multi-byte sequence cut by a chunk boundary is held back (at
// most 3 bytes) until the next chunk completes it, so the line scanner only
// ever sees bytes already known to be valid.
type utf8Checker struct {
	held  [utf8.UTFMax]byte
	nheld int
	// heldAt is the stream offset of held[0].
	heldAt int64
}

// violation is where and why the checker stopped.
type violation struct {
	reason Reason
	at     int64
	detail string
}

// complete finishes a sequence held back from the previous chunk with the
// first bytes of p. It returns how many bytes of p it used, whether the held
// sequence is now complete (and valid), or a violation. When p is too short to
// complete it, all of p is held and done is false.
func (c *utf8Checker) complete(p []byte) (used int, done bool, v *violation) {
	for c.nheld > 0 {
		if utf8.FullRune(c.held[:c.nheld]) {
			if r, size := utf8.DecodeRune(c.held[:c.nheld]); r == utf8.RuneError && size <= 1 {
				return used, false, &violation{ReasonInvalidUTF8, c.heldAt, "invalid UTF-8 sequence"}
			}
			return used, true, nil
		}
		if used == len(p) {
			return used, false, nil
		}
		c.held[c.nheld] = p[used]
		c.nheld++
		used++
	}
	return used, true, nil
}

// scan checks p, whose first byte sits at stream offset base. It returns the
// length of the valid prefix of p: at the first violation, v says where; a
// sequence left incomplete at the end of p is held, not counted as valid.
func (c *utf8Checker) scan(p []byte, base int64) (valid int, v *violation) {
	// Fast path for the common case: the standard library's vectorised
	// check plus a vectorised NUL search over everything but a possibly
	// incomplete last sequence (at most 3 bytes; the slow path holds it).
	whole := len(p)
	for k := 1; k <= utf8.UTFMax-1 && k <= len(p); k++ {
		if b := p[len(p)-k]; b >= 0xC0 {
			whole = len(p) - k // a lead byte: the sequence may be cut
			break
		} else if b < 0x80 {
			break
		}
	}
	if utf8.Valid(p[:whole]) && bytes.IndexByte(p[:whole], 0) < 0 {
		if whole == len(p) {
			return len(p), nil
		}
		valid, v = c.scanSlow(p[whole:], base+int64(whole))
		return whole + valid, v
	}
	return c.scanSlow(p, base)
}

// scanSlow finds the exact offset of the first violation.
func (c *utf8Checker) scanSlow(p []byte, base int64) (valid int, v *violation) {
	i := 0
	n := len(p)
	for i < n {
		// Fast path: 16 then 8 bytes at a time while all are ASCII and
		// non-zero. (w | (w - 0x01…)) has a high bit set in some byte iff
		// that byte is >= 0x80 or is 0 (the subtraction borrows only
		// through a zero byte, and a lower zero byte is itself a hit).
		for i+16 <= n {
			w0 := binary.LittleEndian.Uint64(p[i:])
			w1 := binary.LittleEndian.Uint64(p[i+8:])
			if ((w0|(w0-lowBits))|(w1|(w1-lowBits)))&highBits != 0 {
				break
			}
			i += 16
		}
		for i+8 <= n {
			w := binary.LittleEndian.Uint64(p[i:])
			if (w|(w-lowBits))&highBits != 0 {
				break
			}
			i += 8
		}
		// Slow path for the byte (and its neighbours) that broke the run.
		end := min(i+16, n)
		for ; i < end; i++ {
			b := p[i]
			if b == 0 {
				return i, &violation{ReasonNULByte, base + int64(i), "NUL byte"}
			}
			if b < utf8.RuneSelf {
				continue
			}
			if !utf8.FullRune(p[i:]) {
				// A valid prefix cut by the end of p: hold it.
				c.nheld = copy(c.held[:], p[i:])
				c.heldAt = base + int64(i)
				return i, nil
			}
			r, size := utf8.DecodeRune(p[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, &violation{ReasonInvalidUTF8, base + int64(i), "invalid UTF-8 sequence"}
			}
			i += size - 1
		}
	}
	return n, nil
}

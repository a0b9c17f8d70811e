package gcode

import (
	"errors"
	"fmt"
)

// Reason says which rule of the gate a stream broke.
type Reason string

// The gate's rules. Each RejectError carries exactly one.
const (
	// ReasonInvalidUTF8: a byte sequence that is not UTF-8, including a
	// multi-byte sequence cut off by the end of the stream. Klipper's
	// virtual_sdcard decodes the file as UTF-8 and, on the first undecodable
	// byte, pauses the print silently with an empty message.
	ReasonInvalidUTF8 Reason = "invalid UTF-8"
	// ReasonNULByte: a 0x00 byte. No G-code dialect uses it; it marks binary data.
	ReasonNULByte Reason = "NUL byte"
	// ReasonLineTooLong: a line longer than Options.MaxLineLength.
	ReasonLineTooLong Reason = "line too long"
	// ReasonNotGCode: too many lines that are neither blank, a comment, a
	// classic G/M/T code nor a Klipper extended command in one window.
	ReasonNotGCode Reason = "not G-code"
	// ReasonEmpty: no bytes at all, or only blank lines.
	ReasonEmpty Reason = "empty"
	// ReasonTooFewCommands: fewer G-code commands than Options.MinCommands.
	ReasonTooFewCommands Reason = "too few G-code commands"
	// ReasonNoMotion: not a single G0/G1/G2/G3 move in the whole stream.
	ReasonNoMotion Reason = "no motion command"
)

// RejectError is the gate's verdict on a stream that must not reach Klipper.
// It never quotes the stream's content: G-code is the creator's secret and
// errors end up in logs.
type RejectError struct {
	Reason Reason
	// Offset is the 0-based byte offset of the offending byte or line (for
	// end-of-stream checks: the stream's length).
	Offset int64
	// Line is the 1-based line number Offset falls on.
	Line   int64
	Detail string
}

func (e *RejectError) Error() string {
	s := fmt.Sprintf("gcode rejected: %s at byte offset %d (line %d)", e.Reason, e.Offset, e.Line)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// ErrFinished is returned by Write after Finish.
var ErrFinished = errors.New("gcode: write after Finish")

package config

import (
	"errors"
	"fmt"
	"strings"
)

// Error classes. Every *FieldError wraps exactly one of them, so callers can
// ask errors.Is(err, config.ErrUnknownKey) on the joined error Load returns.
var (
	ErrSyntax         = errors.New("syntax error")
	ErrUnknownKey     = errors.New("unknown key")
	ErrWrongType      = errors.New("wrong type")
	ErrOutOfRange     = errors.New("out of range")
	ErrInvalidValue   = errors.New("invalid value")
	ErrInsecureURL    = errors.New("insecure URL")
	ErrUnreadableFile = errors.New("unreadable file")
	ErrSecretInConfig = errors.New("secret in configuration")
)

// SourceKind says which layer a setting came from.
type SourceKind int

// The layers, lowest precedence first.
const (
	SourceDefault SourceKind = iota
	SourceFile
	SourceMoonraker
	SourceEnv
	SourceFlag
)

func (k SourceKind) String() string {
	switch k {
	case SourceDefault:
		return "default"
	case SourceFile:
		return "file"
	case SourceMoonraker:
		return "moonraker.conf"
	case SourceEnv:
		return "environment"
	case SourceFlag:
		return "flag"
	}
	return fmt.Sprintf("SourceKind(%d)", int(k))
}

// Source names where one value came from: the file path (and line, for
// moonraker.conf), the environment variable or the command-line flag.
type Source struct {
	Kind SourceKind `json:"kind"`
	// Name is the file path, the variable name or the flag ("--name").
	Name string `json:"name,omitempty"`
	// Line is the 1-based line in moonraker.conf; 0 when unknown.
	Line int `json:"line,omitempty"`
	// Option is the moonraker.conf option an imported value was read from.
	Option string `json:"option,omitempty"`
}

func (s Source) String() string {
	switch s.Kind {
	case SourceDefault:
		if s.Name != "" {
			return "default (" + s.Name + ")"
		}
		return "default"
	case SourceFile:
		return s.Name
	case SourceMoonraker:
		loc := s.Name
		if s.Line > 0 {
			loc = fmt.Sprintf("%s:%d", s.Name, s.Line)
		}
		if s.Option != "" {
			return fmt.Sprintf("%s [%s] %s", loc, moonrakerSection, s.Option)
		}
		return loc
	case SourceEnv:
		return "environment variable " + s.Name
	case SourceFlag:
		return "flag " + s.Name
	}
	return s.Kind.String()
}

// FieldError is one problem with one setting. Load joins all of them with
// errors.Join, one problem per line.
type FieldError struct {
	Source Source
	// Key is the dotted setting name ("marketplace.check_interval"); empty
	// for problems with a whole file (syntax, unreadable).
	Key string
	// Class is one of the Err* values above.
	Class error
	// Problem says what is wrong; Allowed what would be accepted.
	Problem string
	Allowed string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source.String())
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	if e.Allowed != "" {
		b.WriteString(" (allowed: ")
		b.WriteString(e.Allowed)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the error class, for errors.Is.
func (e *FieldError) Unwrap() error { return e.Class }

// FieldErrors returns every *FieldError inside err (as returned by Load).
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		walk(errors.Unwrap(e))
	}
	walk(err)
	return out
}

// Package redact takes credentials out of text before it reaches a log, a
// status report or an error message: signed download URLs carry theirs in
// the query string, and user info may hold a password. Every place that
// hides something writes the same marker, so one grep finds them all.
package redact

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// Marker stands where something was taken out.
const Marker = "REDACTED"

// URL renders u for logs and messages: scheme, host and path only. Any
// query becomes "?REDACTED"; user info and fragment are dropped.
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	s := r.String()
	if u.RawQuery != "" || u.ForceQuery {
		s += "?" + Marker
	}
	return s
}

// URLString is URL for a URL given as text. Text that does not parse keeps
// only what precedes a possible query or fragment, and nothing at all if
// that part may hold user info.
func URLString(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		return URL(u)
	}
	cut := raw
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		cut = raw[:i] + "?" + Marker
	}
	if strings.Contains(cut, "@") {
		return "(unparsable URL)"
	}
	return cut
}

// Error strips the URL's query out of a *url.Error (net/http puts the full
// request URL into its errors); other errors are returned as they are.
func Error(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: URLString(ue.URL), Err: ue.Err}
	}
	return err
}

// MaxMessage bounds a message Message returns, in bytes.
const MaxMessage = 500

// urlQuery matches the query string of a URL quoted in free text.
var urlQuery = regexp.MustCompile(`(https?://[^\s?"']*)\?[^\s"']*`)

// Message makes free text that may quote an HTTP client's error safe to
// keep and send on (a job's status message, a refused report's answer): URL
// query strings are replaced by the marker, invalid UTF-8 by "?", and the
// text is cut to MaxMessage bytes.
func Message(msg string) string {
	msg = urlQuery.ReplaceAllString(msg, "$1?"+Marker)
	msg = strings.ToValidUTF8(msg, "?")
	if len(msg) > MaxMessage {
		msg = strings.ToValidUTF8(msg[:MaxMessage], "") + "…"
	}
	return msg
}

package marketplace

import (
	"errors"
	"net/url"
	"strings"
)

// redactURL renders u for logs: scheme, host and path only. Signed download
// URLs carry their credential in the query, so any query becomes
// "?REDACTED"; user info is dropped.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	s := r.String()
	if u.RawQuery != "" || u.ForceQuery {
		s += "?REDACTED"
	}
	return s
}

func redactURLString(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable: keep only what precedes a possible query.
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i] + "?REDACTED"
		}
		return raw
	}
	return redactURL(u)
}

// redactErr strips the URL's query out of a *url.Error (net/http puts the
// full request URL into its errors).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redactURLString(ue.URL), Err: ue.Err}
	}
	return err
}

package redact

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestURLString(t *testing.T) {
	for in, want := range map[string]string{
		"https://storage.example/b/o.enc?X-Goog-Signature=abc": "https://storage.example/b/o.enc?REDACTED",
		"https://user:pw@api.example/x":                        "https://api.example/x",
		"https://api.example/api/poll":                         "https://api.example/api/poll",
		"https://api.example/x#frag":                           "https://api.example/x",
		"::bad?sig=1":                                          "::bad?REDACTED",
		"::bad/user:pw@host?sig=1":                             "(unparsable URL)",
	} {
		if got := URLString(in); got != want {
			t.Errorf("%s ⇒ %s, want %s", in, got, want)
		}
	}
}

func TestErrorRemovesQuery(t *testing.T) {
	err := Error(&url.Error{Op: "Get", URL: "https://s.example/o?sig=secret", Err: errors.New("boom")})
	if strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "?"+Marker) {
		t.Fatalf("error leaks the query: %v", err)
	}
	plain := errors.New("no URL here")
	if Error(plain) != plain {
		t.Fatal("an error without a URL was changed")
	}
}

func TestMessageRemovesURLQueries(t *testing.T) {
	in := `Get "https://storage.example/bucket/f.bin?X-Goog-Signature=abc&X-Goog-Credential=x": EOF`
	out := Message(in)
	if strings.Contains(out, "Signature") || strings.Contains(out, "Credential") || !strings.Contains(out, "https://storage.example/bucket/f.bin?REDACTED") {
		t.Fatalf("Message(%q) = %q", in, out)
	}
	if got := Message(string(bytes.Repeat([]byte("é"), 400))); len(got) > 510 || !strings.HasSuffix(got, "…") {
		t.Fatalf("long message not bounded: %d bytes", len(got))
	}
}

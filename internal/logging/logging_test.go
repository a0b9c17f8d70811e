package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestJournalFormat(t *testing.T) {
	var out bytes.Buffer
	lv := new(slog.LevelVar)
	log := New(&out, lv, true).With(ComponentKey, "jobs")
	log.Debug("hidden")
	log.Info("job state", "job", "job-1", "state", "printing")
	log.Warn("job failed", "message", "two\nlines")
	log.WithGroup("token").Error("refresh failed", "expires", "soon")
	want := `<6>job state part=jobs job=job-1 state=printing
<4>job failed part=jobs message="two\nlines"
<3>refresh failed part=jobs token.expires=soon
`
	if out.String() != want {
		t.Fatalf("journal lines:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	lv.Set(slog.LevelDebug)
	log.Debug("now shown")
	if out.String() != "<7>now shown part=jobs\n" {
		t.Fatalf("debug: %q", out.String())
	}
}

func TestTextFormatHasTime(t *testing.T) {
	var out bytes.Buffer
	New(&out, slog.LevelInfo, false).Info("hello", ComponentKey, "api")
	if !strings.HasPrefix(out.String(), "time=") || !strings.Contains(out.String(), "level=INFO msg=hello part=api") {
		t.Fatalf("text line: %q", out.String())
	}
}

func TestJournalStream(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string { return func(string) string { return v } }
	if !JournalStream(f, env(fmt.Sprintf("%d:%d", st.Dev, st.Ino))) {
		t.Error("the stream JOURNAL_STREAM names is not recognised")
	}
	if JournalStream(f, env("1:2")) || JournalStream(f, env("")) {
		t.Error("another stream, or none, taken for the journal")
	}
}

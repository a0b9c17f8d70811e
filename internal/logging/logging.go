// Package logging builds lmntd's logger. Under systemd (JOURNAL_STREAM
// names the stream stderr is connected to) each record is one line with a
// syslog priority prefix ("<4>…", see sd-daemon(3)) that the journal turns
// into the entry's priority, so `journalctl -p warning` filters it, and
// without a timestamp, which the journal records itself. Elsewhere (a
// terminal, a file, the demo) records are logfmt lines with a timestamp
// and level.
package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ComponentKey is the one attribute naming the part of lmntd that logs.
const ComponentKey = "part"

// New returns the logger writing to out at level. journal selects the
// journal's format; JournalStream tells whether out is the journal.
func New(out io.Writer, level slog.Leveler, journal bool) *slog.Logger {
	if !journal {
		return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(&journalHandler{out: out, level: level, mu: new(sync.Mutex)})
}

// JournalStream reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM holds its "device:inode", which stays set in
// children whose stderr was redirected elsewhere, so it is compared.
func JournalStream(f *os.File, environ func(string) string) bool {
	want := environ("JOURNAL_STREAM")
	if want == "" || f == nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return want == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// Priority is the syslog priority of a level: error 3, warning 4, info 6,
// debug 7.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// journalHandler writes "<P>message key=value …": the message bare, the
// attributes in logfmt (as slog's text handler quotes them), one line.
type journalHandler struct {
	out   io.Writer
	level slog.Leveler
	mu    *sync.Mutex
	// with rebuilds the attributes and groups added by WithAttrs and
	// WithGroup on a fresh text handler.
	with []func(slog.Handler) slog.Handler
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	var attrs bytes.Buffer
	var th slog.Handler = slog.NewTextHandler(&attrs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	for _, w := range h.with {
		th = w(th)
	}
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	line := fmt.Sprintf("<%d>%s", Priority(r.Level), strings.ReplaceAll(r.Message, "\n", " "))
	if rest := bytes.TrimSpace(attrs.Bytes()); len(rest) > 0 {
		line += " " + string(rest)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.out, line+"\n")
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.plus(func(th slog.Handler) slog.Handler { return th.WithAttrs(as) })
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return h.plus(func(th slog.Handler) slog.Handler { return th.WithGroup(name) })
}

func (h *journalHandler) plus(f func(slog.Handler) slog.Handler) *journalHandler {
	c := *h
	c.with = append(append([]func(slog.Handler) slog.Handler{}, h.with...), f)
	return &c
}

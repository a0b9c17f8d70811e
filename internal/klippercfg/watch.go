package klippercfg

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions tunes Watch.
type WatchOptions struct {
	Check CheckOptions
	// Debounce is how long the tree must be quiet before it is re-read
	// (editors and SAVE_CONFIG write in several steps); 0 means 250ms.
	Debounce time.Duration
	// Logger receives watch problems; nil discards.
	Logger *slog.Logger
}

// Watcher re-checks printer.cfg and its include tree whenever one of its
// files is written in place, replaced by rename, or deleted and recreated,
// and whenever a file appears that an include glob would match.
type Watcher struct {
	path     string
	opts     WatchOptions
	log      *slog.Logger
	fw       *fsnotify.Watcher
	reports  chan *Report
	done     chan struct{}
	watching map[string]bool

	mu     sync.Mutex
	latest *Report
	last   [32]byte
	// relevant names and patterns of the current tree
	files    map[string]bool
	patterns []string
	missing  []string
}

// Watch checks path at once and then on every change until ctx ends. The
// first report is available on Reports immediately.
func Watch(ctx context.Context, path string, opts WatchOptions) (*Watcher, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("klippercfg: watching %s: %w", path, err)
	}
	w := &Watcher{
		path: path, opts: opts, log: log, fw: fw,
		reports: make(chan *Report, 1), done: make(chan struct{}), watching: map[string]bool{},
	}
	w.evaluate(true)
	go w.loop(ctx)
	return w, nil
}

// Reports delivers a new report whenever the tree's content changed. Only
// the newest undelivered report is kept. The channel closes when the watch ends.
func (w *Watcher) Reports() <-chan *Report { return w.reports }

// Latest is the most recent report.
func (w *Watcher) Latest() *Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Wait blocks until the watch has ended (after ctx was cancelled).
func (w *Watcher) Wait() { <-w.done }

func (w *Watcher) loop(ctx context.Context) {
	defer close(w.done)
	defer close(w.reports)
	defer w.fw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			if ev.Op != fsnotify.Chmod && w.relevant(filepath.Clean(ev.Name)) {
				timer.Reset(w.opts.Debounce)
			}
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			w.log.Warn("printer.cfg watch error; re-reading", "error", err)
			timer.Reset(w.opts.Debounce)
		case <-timer.C:
			if w.evaluate(false) {
				// Files in a newly watched directory may have changed
				// between reading them and adding the watch: look again.
				timer.Reset(w.opts.Debounce)
			}
		}
	}
}

// evaluate re-reads the tree, delivers the report if anything changed and
// moves the watches to the directories of the new tree. It reports whether a
// directory was newly watched.
func (w *Watcher) evaluate(first bool) (addedDirs bool) {
	cfg := Parse(w.path)
	report := Check(cfg, w.opts.Check)
	fp := cfg.fingerprint()

	files := map[string]bool{w.path: true}
	dirs := map[string]bool{filepath.Dir(w.path): true}
	for _, f := range cfg.Files {
		files[f] = true
		dirs[filepath.Dir(f)] = true
	}
	var patterns []string
	for _, inc := range cfg.Includes {
		patterns = append(patterns, inc.Pattern)
		dirs[nonMagicDir(inc.Pattern)] = true
		if hasMagic(filepath.Dir(inc.Pattern)) {
			for _, m := range inc.Matches {
				dirs[filepath.Dir(m)] = true
			}
		}
	}
	// A directory that does not exist yet is watched through its nearest
	// existing ancestor, so its creation is noticed.
	var missing []string
	want := map[string]bool{}
	for d := range dirs {
		existing := d
		for {
			if st, err := os.Stat(existing); err == nil && st.IsDir() {
				break
			}
			parent := filepath.Dir(existing)
			if parent == existing {
				break
			}
			existing = parent
		}
		if existing != d {
			missing = append(missing, d)
		}
		want[existing] = true
	}
	for d := range want {
		if err := w.fw.Add(d); err != nil {
			w.log.Warn("cannot watch directory of the Klipper config", "dir", d, "error", err)
			continue
		}
		if !w.watching[d] {
			w.watching[d] = true
			addedDirs = !first
		}
	}
	for d := range w.watching {
		if !want[d] {
			_ = w.fw.Remove(d) // already gone if the directory was deleted
			delete(w.watching, d)
		}
	}

	w.mu.Lock()
	w.files, w.patterns, w.missing = files, patterns, missing
	changed := first || fp != w.last
	w.last = fp
	if changed {
		w.latest = report
	}
	w.mu.Unlock()
	if changed {
		select { // keep only the newest report
		case <-w.reports:
		default:
		}
		w.reports <- report
	}
	return addedDirs
}

// relevant reports whether an event on name can change the result.
func (w *Watcher) relevant(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.files[name] {
		return true
	}
	for _, p := range w.patterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
		// A directory on the way to an include pattern (e.g. macros/ created).
		if strings.HasPrefix(p, name+string(filepath.Separator)) {
			return true
		}
	}
	for _, m := range w.missing {
		if m == name || strings.HasPrefix(m, name+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// nonMagicDir is the deepest directory of pattern without glob characters.
func nonMagicDir(pattern string) string {
	d := filepath.Dir(pattern)
	for hasMagic(d) {
		d = filepath.Dir(d)
	}
	return d
}

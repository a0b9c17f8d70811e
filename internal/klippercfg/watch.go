package klippercfg

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/dirwatch"
)

// WatchOptions tunes Watch.
type WatchOptions struct {
	Check CheckOptions
	// Debounce is how long the tree must be quiet before it is re-read
	// (editors and SAVE_CONFIG write in several steps); 0 means
	// dirwatch.DefaultDebounce (250ms).
	Debounce time.Duration
	// Logger receives watch problems; nil discards.
	Logger *slog.Logger
}

// Watcher re-checks printer.cfg and its include tree whenever one of its
// files is written in place, replaced by rename, or deleted and recreated,
// and whenever a file appears that an include glob would match.
type Watcher struct {
	path    string
	opts    WatchOptions
	dw      *dirwatch.Watcher
	reports chan *Report
	done    chan struct{}

	mu     sync.Mutex
	latest *Report
	last   [32]byte
	// relevant names and patterns of the current tree
	files    map[string]bool
	patterns []string
}

// Watch checks path at once and then on every change until ctx ends. The
// first report is available on Reports immediately.
func Watch(ctx context.Context, path string, opts WatchOptions) (*Watcher, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	w := &Watcher{path: path, opts: opts, reports: make(chan *Report, 1), done: make(chan struct{})}
	dw, err := dirwatch.New(dirwatch.Options{Debounce: opts.Debounce, Relevant: w.relevant, What: "Klipper config", Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("klippercfg: %w", err)
	}
	w.dw = dw
	w.evaluate(true)
	go func() {
		defer close(w.done)
		defer close(w.reports)
		dw.Run(ctx, func() { w.evaluate(false) })
	}()
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

// evaluate re-reads the tree, delivers the report if anything changed and
// moves the watches to the directories of the new tree.
func (w *Watcher) evaluate(first bool) {
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
	w.mu.Lock()
	w.files, w.patterns = files, patterns
	w.mu.Unlock()
	w.dw.Watch(slices.Collect(maps.Keys(dirs)))

	w.mu.Lock()
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
}

// relevant reports whether an event on name can change the result (dirwatch
// adds the directories on the way to a missing one).
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

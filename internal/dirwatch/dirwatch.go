// Package dirwatch watches directories for changes to the files that matter
// to its caller and reports each burst of changes once it has settled.
//
// It watches directories, not files: editors save by renaming a new file over
// the old one and Klipper's SAVE_CONFIG writes in several steps, which a
// watch on the file itself would miss or report half-done. A directory that
// does not exist yet (or was deleted, or renamed away) is watched through its
// nearest existing ancestor, so its creation is noticed and the watch moves
// back into it; a directory deleted and recreated is watched again.
package dirwatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long the files must be quiet before the caller
// looks at them again when Options.Debounce is 0.
const DefaultDebounce = 250 * time.Millisecond

// Options tunes a Watcher.
type Options struct {
	// Debounce is how long changes must have stopped before Run calls back;
	// 0 means DefaultDebounce.
	Debounce time.Duration
	// Relevant reports whether a change of the file or directory name (an
	// absolute, clean path) can matter to the caller. Changes of the watched
	// directories themselves and on the way to a missing one always do.
	Relevant func(name string) bool
	// What names the watched thing in log lines ("config file").
	What string
	// Logger receives watch problems; nil discards.
	Logger *slog.Logger
}

// Watcher holds the watches of one caller.
type Watcher struct {
	o  Options
	fw *fsnotify.Watcher

	mu       sync.Mutex
	want     []string         // directories the caller asked for
	watching map[string]dirID // directories watched now
	missing  []string         // wanted directories that do not exist
	added    bool             // a directory was (re)watched since Run's last callback
}

// dirID tells a recreated directory from the one that was watched.
type dirID struct{ dev, ino uint64 }

// New sets up a Watcher; Watch says what to watch and Run starts reporting.
func New(o Options) (*Watcher, error) {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Relevant == nil {
		o.Relevant = func(string) bool { return true }
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching the %s: %w", o.What, err)
	}
	return &Watcher{o: o, fw: fw, watching: map[string]dirID{}}, nil
}

// Watch makes dirs (absolute paths) the watched set: a directory that does
// not exist is watched through its nearest existing ancestor, and watches of
// directories no longer wanted are removed. A directory that cannot be
// watched is logged and skipped.
func (w *Watcher) Watch(dirs []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = append(w.want[:0:0], dirs...)
	w.resolveLocked()
}

func (w *Watcher) resolveLocked() {
	var missing []string
	want := map[string]dirID{}
	for _, d := range w.want {
		d = filepath.Clean(d)
		existing := d
		var id dirID
		for {
			if st, err := os.Stat(existing); err == nil && st.IsDir() {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok {
					id = dirID{uint64(sys.Dev), sys.Ino}
				}
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
		want[existing] = id
	}
	for d, id := range want {
		if old, ok := w.watching[d]; ok && old == id {
			continue
		}
		// New, or deleted and recreated since: the old watch died with the
		// old directory.
		if err := w.fw.Add(d); err != nil {
			w.o.Logger.Warn("cannot watch a directory of the "+w.o.What, "dir", d, "error", err)
			continue
		}
		w.watching[d] = id
		w.added = true
	}
	for d := range w.watching {
		if _, ok := want[d]; !ok {
			_ = w.fw.Remove(d) // already gone if the directory was deleted
			delete(w.watching, d)
		}
	}
	w.missing = missing
}

// relevant reports whether an event on name can matter.
func (w *Watcher) relevant(name string) bool {
	w.mu.Lock()
	_, watched := w.watching[name]
	missing := w.missing
	w.mu.Unlock()
	if watched {
		return true // the directory itself was deleted or renamed away
	}
	for _, m := range missing {
		if m == name || strings.HasPrefix(m, name+string(filepath.Separator)) {
			return true
		}
	}
	return w.o.Relevant(name)
}

// Run calls settled after every burst of relevant changes, once they have
// been quiet for the debounce time, until ctx ends; then it releases the
// watches. Before each call the watches follow directories that appeared
// or were recreated; when that added one, settled runs once more after
// another quiet spell, since files in it may have changed between the
// caller reading them and the watch being in place.
func (w *Watcher) Run(ctx context.Context, settled func()) {
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
				timer.Reset(w.o.Debounce)
			}
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			// An overflow loses events: look again to be sure nothing was missed.
			w.o.Logger.Warn(w.o.What+" watch error; re-reading", "error", err)
			timer.Reset(w.o.Debounce)
		case <-timer.C:
			w.mu.Lock()
			w.added = false
			w.resolveLocked()
			w.mu.Unlock()
			settled()
			w.mu.Lock()
			again := w.added
			w.mu.Unlock()
			if again {
				timer.Reset(w.o.Debounce)
			}
		}
	}
}

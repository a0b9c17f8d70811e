package config

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/dirwatch"
)

// Change is one setting whose value differs between the running
// configuration and a newly loaded one.
type Change struct {
	Key string `json:"key"`
	Old string `json:"old"`
	New string `json:"new"`
	// Restart is true when the running daemon cannot apply the change: it
	// takes effect at the next start.
	Restart bool `json:"restart"`
}

// Diff lists the settings that differ between old and new, sorted by key.
func Diff(old, new *Config) []Change {
	a, b := old.flatten(), new.flatten()
	var out []Change
	for _, f := range schema {
		if reflect.DeepEqual(a[f.key], b[f.key]) {
			continue
		}
		out = append(out, Change{Key: f.key, Old: display(a[f.key]), New: display(b[f.key]), Restart: !f.live})
	}
	return out
}

// Update is the outcome of one reload.
type Update struct {
	// Config is the configuration in effect after the reload: the new
	// file's live settings over the running configuration. On error it is
	// the unchanged running configuration.
	Config *Config
	// Changes are all differences between the running configuration and the
	// file, including those that need a restart (Change.Restart).
	Changes []Change
	// Err is why the new configuration was rejected (a joined error of
	// *FieldError); nil on success.
	Err error
}

// RestartRequired lists the changed keys that take effect only after a restart.
func (u Update) RestartRequired() []string {
	var out []string
	for _, c := range u.Changes {
		if c.Restart {
			out = append(out, c.Key)
		}
	}
	return out
}

// WatcherOptions tunes a Watcher.
type WatcherOptions struct {
	// Debounce is how long the file must be quiet before it is re-read
	// (editors write in several steps); 0 means dirwatch.DefaultDebounce
	// (250ms).
	Debounce time.Duration
	// Logger receives reload outcomes; nil discards.
	Logger *slog.Logger
}

// Watcher reloads the configuration when the daemon gets SIGHUP (Reload) or
// when the config file changes (Start), applies the settings that can change at
// run time and reports the rest as needing a restart.
type Watcher struct {
	opts     Options
	path     string
	debounce time.Duration
	log      *slog.Logger
	updates  chan Update
	wg       sync.WaitGroup

	mu      sync.Mutex
	current *Config
}

// NewWatcher watches the configuration loaded from opts; running is what the
// daemon started with.
func NewWatcher(opts Options, running *Config, wo WatcherOptions) *Watcher {
	if wo.Logger == nil {
		wo.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	path, _ := opts.ConfigPath()
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	return &Watcher{
		opts: opts, path: path, debounce: wo.Debounce, log: wo.Logger,
		updates: make(chan Update, 8), current: running,
	}
}

// Current is the configuration in effect.
func (w *Watcher) Current() *Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Updates delivers every reload outcome. If nobody reads, the oldest
// undelivered updates are dropped; Current is always up to date.
func (w *Watcher) Updates() <-chan Update { return w.updates }

// Reload re-reads every layer now (the daemon calls it on SIGHUP). A valid
// configuration's live settings are applied; an invalid one is rejected and
// the running configuration kept.
func (w *Watcher) Reload() Update {
	w.mu.Lock()
	running := w.current
	next, err := Load(w.opts)
	var u Update
	if err != nil {
		u = Update{Config: running, Err: err}
		w.log.Warn("configuration reload rejected; keeping the running configuration", "file", w.path, "error", err)
	} else {
		u = Update{Config: applyLive(running, next), Changes: Diff(running, next)}
		w.current = u.Config
		for _, fe := range next.Degraded() {
			w.log.Warn("configuration value ignored (lmnt doctor)", "problem", fe.Error())
		}
		for _, c := range u.Changes {
			if c.Restart {
				w.log.Warn("configuration change needs a restart of lmntd", "key", c.Key, "old", c.Old, "new", c.New)
			} else {
				w.log.Info("configuration change applied", "key", c.Key, "old", c.Old, "new", c.New)
			}
		}
	}
	w.mu.Unlock()
	w.publish(u)
	return u
}

func (w *Watcher) publish(u Update) {
	for {
		select {
		case w.updates <- u:
			return
		default:
		}
		select { // full: drop the oldest, then retry
		case <-w.updates:
		default:
		}
	}
}

// Start watches the config file's directory (dirwatch: a rename over the
// file, a deleted and recreated file or directory) and reloads after changes
// settle. It returns once the watch is in place; the watch ends with ctx
// (Wait waits for that).
func (w *Watcher) Start(ctx context.Context) error {
	dw, err := dirwatch.New(dirwatch.Options{
		Debounce: w.debounce,
		Relevant: func(name string) bool { return name == w.path },
		What:     "config file",
		Logger:   w.log,
	})
	if err != nil {
		return fmt.Errorf("config: %s: %w", w.path, err)
	}
	dw.Watch([]string{filepath.Dir(w.path)})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		dw.Run(ctx, func() { w.Reload() })
	}()
	return nil
}

// Wait blocks until the watch started by Start has ended.
func (w *Watcher) Wait() { w.wg.Wait() }

// applyLive returns running with the live settings taken from next; the
// restart-only settings keep their running values until a restart.
func applyLive(running, next *Config) *Config {
	out := *running
	dst := reflect.ValueOf(&out).Elem()
	src := reflect.ValueOf(next).Elem()
	origins := make(map[string]Source, len(running.origins))
	for k, v := range running.origins {
		origins[k] = v
	}
	for _, f := range schema {
		if f.live {
			dst.FieldByIndex(f.index).Set(src.FieldByIndex(f.index))
			origins[f.key] = next.Origin(f.key)
		}
	}
	out.origins = origins
	out.notes = next.notes
	// What the files get wrong now, not at start, is what doctor shows.
	out.degraded = next.degraded
	return &out
}

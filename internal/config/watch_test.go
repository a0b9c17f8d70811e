package config

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// reloadFixture is a running Watcher on a config file in a temp directory.
type reloadFixture struct {
	dir, path string
	w         *Watcher
}

func startWatcher(t *testing.T, content string) *reloadFixture {
	t.Helper()
	dir := t.TempDir()
	path := testutil.WriteFile(t, dir, "lmntd.toml", content+hermetic(dir))
	opts := Options{ConfigFile: path, Environ: env()}
	cfg := mustLoad(t, opts)
	w := NewWatcher(opts, cfg, WatcherOptions{Debounce: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); w.Wait() })
	return &reloadFixture{dir: dir, path: path, w: w}
}

// waitFor returns the first update that satisfies ok, failing after 5 s.
func (f *reloadFixture) waitFor(t *testing.T, what string, ok func(Update) bool) Update {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-f.w.Updates():
			if ok(u) {
				return u
			}
		case <-deadline:
			t.Fatalf("no update with %s within 5s", what)
		}
	}
}

func levelIs(level string) func(Update) bool {
	return func(u Update) bool { return u.Err == nil && u.Config.Log.Level == level }
}

func TestReloadOnRenameOverSave(t *testing.T) {
	f := startWatcher(t, "[log]\nlevel = \"info\"\n")
	// vim/VS Code style: write a new file, rename it over the old one.
	tmp := testutil.WriteFile(t, f.dir, ".lmntd.toml.swp", "[log]\nlevel = \"debug\"\n"+hermetic(f.dir))
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	u := f.waitFor(t, "log.level debug", levelIs("debug"))
	if len(u.Changes) != 1 || u.Changes[0].Key != "log.level" || u.Changes[0].Restart {
		t.Errorf("changes = %+v", u.Changes)
	}
	if f.w.Current().Log.Level != "debug" {
		t.Errorf("Current not updated")
	}
}

func TestReloadOnWriteInPlaceSave(t *testing.T) {
	f := startWatcher(t, "[marketplace]\ncheck_interval = \"60s\"\n")
	// nano style: truncate and rewrite the same inode.
	fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString("[marketplace]\ncheck_interval = \"15s\"\n" + hermetic(f.dir)); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	u := f.waitFor(t, "check_interval 15s", func(u Update) bool {
		return u.Err == nil && u.Config.Marketplace.CheckInterval == 15*time.Second
	})
	if u.Config.Origin("marketplace.check_interval").Kind != SourceFile {
		t.Errorf("origin = %v", u.Config.Origin("marketplace.check_interval"))
	}
}

func TestReloadOnDeleteRecreate(t *testing.T) {
	f := startWatcher(t, "[log]\nlevel = \"info\"\n")
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, f.dir, "lmntd.toml", "[log]\nlevel = \"error\"\n"+hermetic(f.dir))
	f.waitFor(t, "log.level error", levelIs("error"))
}

func TestReloadInvalidEditKeepsRunningConfig(t *testing.T) {
	f := startWatcher(t, "[log]\nlevel = \"warn\"\n")
	before := f.w.Current()
	testutil.WriteFile(t, f.dir, "lmntd.toml", "[log]\nlevel = \"shout\"\n"+hermetic(f.dir))
	u := f.waitFor(t, "an error", func(u Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, ErrInvalidValue) {
		t.Errorf("err = %v", u.Err)
	}
	if u.Config != before || f.w.Current() != before || f.w.Current().Log.Level != "warn" {
		t.Errorf("running configuration replaced by an invalid one")
	}
	// Fixing the file applies again.
	testutil.WriteFile(t, f.dir, "lmntd.toml", "[log]\nlevel = \"debug\"\n"+hermetic(f.dir))
	f.waitFor(t, "log.level debug", levelIs("debug"))
}

func TestReloadRestartOnlyKeyIsReportedNotApplied(t *testing.T) {
	f := startWatcher(t, "[klipper]\nuser = \"pi\"\n[limits]\nrequest_timeout = \"30s\"\n")
	tmp := testutil.WriteFile(t, f.dir, "lmntd.toml.new", "[klipper]\nuser = \"biqu\"\n[limits]\nrequest_timeout = \"10s\"\n"+hermetic(f.dir))
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	u := f.waitFor(t, "both changes", func(u Update) bool { return u.Err == nil && len(u.Changes) == 2 })
	if got := u.RestartRequired(); len(got) != 1 || got[0] != "klipper.user" {
		t.Errorf("RestartRequired = %v", got)
	}
	cur := f.w.Current()
	if cur.Klipper.User != "pi" {
		t.Errorf("restart-only klipper.user applied at run time: %q", cur.Klipper.User)
	}
	if cur.Limits.RequestTimeout != 10*time.Second {
		t.Errorf("live limits.request_timeout not applied: %v", cur.Limits.RequestTimeout)
	}
}

func TestReloadOnSIGHUPWithoutChange(t *testing.T) {
	f := startWatcher(t, "[log]\nlevel = \"info\"\n")
	u := f.w.Reload()
	if u.Err != nil || len(u.Changes) != 0 {
		t.Errorf("Reload of an unchanged file: %+v", u)
	}
	if got := <-f.w.Updates(); got.Err != nil || len(got.Changes) != 0 || got.Config != u.Config {
		t.Errorf("published update differs from the returned one: %+v", got)
	}
	// SIGHUP after an edit applies it even if the file watch had not fired yet.
	tmp := testutil.WriteFile(t, f.dir, "lmntd.toml.tmp", "[log]\nlevel = \"warn\"\n"+hermetic(f.dir))
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	if u := f.w.Reload(); u.Err != nil || u.Config.Log.Level != "warn" {
		t.Errorf("Reload after edit: %+v", u)
	}
}

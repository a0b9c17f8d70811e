package dirwatch

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/testutil"
)

// start watches dirs for changes of the file named target and counts the
// callbacks.
func start(t *testing.T, target string, dirs ...string) *atomic.Int32 {
	t.Helper()
	w, err := New(Options{Debounce: 20 * time.Millisecond, What: "test file", Relevant: func(name string) bool { return name == target }})
	if err != nil {
		t.Fatal(err)
	}
	w.Watch(dirs)
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func() { calls.Add(1) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &calls
}

// rewriteUntilCalled writes dir/name until the callback runs again (the
// watch on a new directory is set up asynchronously, so a write made
// before it is in place goes unseen).
func rewriteUntilCalled(t *testing.T, calls *atomic.Int32, dir, name, content, what string) {
	t.Helper()
	n := calls.Load()
	testutil.Eventually(t, 5*time.Second, what, func() bool {
		testutil.WriteFile(t, dir, name, content)
		time.Sleep(50 * time.Millisecond)
		return calls.Load() > n
	})
}

func waitCalls(t *testing.T, calls *atomic.Int32, atLeast int32, what string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, what, func() bool { return calls.Load() >= atLeast })
}

func TestRenameOverIsOneSettledChange(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "lmntd.yaml")
	testutil.WriteFile(t, dir, "lmntd.yaml", "a: 1\n")
	calls := start(t, target, dir)
	// An editor's save: write a temp file in steps, rename it over.
	tmp := testutil.WriteFile(t, dir, ".lmntd.yaml.swp", "a: 2\n")
	if err := os.Rename(tmp, target); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, calls, 1, "the callback after a rename over the file")
}

func TestMissingDirectoryIsWatchedOnceCreated(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b")
	target := filepath.Join(dir, "printer.cfg")
	calls := start(t, target, dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, dir, "printer.cfg", "[printer]\n")
	waitCalls(t, calls, 1, "the callback after the directory and file appeared")
	// The watch is now inside the new directory: a write in place is seen.
	rewriteUntilCalled(t, calls, dir, "printer.cfg", "[printer]\nkinematics: none\n", "a later write in the created directory")
}

func TestDeletedAndRecreatedDirectoryIsWatchedAgain(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "lmntd")
	target := filepath.Join(dir, "lmntd.yaml")
	testutil.WriteFile(t, root, "lmntd/lmntd.yaml", "a: 1\n")
	calls := start(t, target, dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, calls, 1, "the callback after the directory was deleted")
	testutil.WriteFile(t, root, "lmntd/lmntd.yaml", "a: 2\n")
	waitCalls(t, calls, 2, "the callback after the directory came back")
	rewriteUntilCalled(t, calls, dir, "lmntd.yaml", "a: 3\n", "a later write in the recreated directory")
}

func TestDirectoryRenamedAwayAndBack(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "config")
	target := filepath.Join(dir, "printer.cfg")
	testutil.WriteFile(t, root, "config/printer.cfg", "[printer]\n")
	calls := start(t, target, dir)
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, calls, 1, "the callback after the directory was renamed away")
	testutil.WriteFile(t, root, "config/printer.cfg", "[printer]\nkinematics: none\n")
	waitCalls(t, calls, 2, "the callback after a new directory took its place")
	// A write in the new directory is seen.
	rewriteUntilCalled(t, calls, dir, "printer.cfg", "[printer]\nkinematics: cartesian\n", "a later write in the new directory")
}

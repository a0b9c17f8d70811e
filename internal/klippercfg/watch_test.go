package klippercfg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyTree copies testdata/<tree> into a temp dir and returns the new printer.cfg.
func copyTree(t *testing.T, tree string) string {
	t.Helper()
	src := filepath.Join("testdata", tree)
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dst, "printer.cfg")
}

func startWatch(t *testing.T, path string) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Watch(ctx, path, WatchOptions{Check: CheckOptions{BridgeSocket: DefaultBridgeSocket}, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		w.Wait()
		if _, open := <-w.Reports(); open {
			// drain the last report; the channel must then be closed
			if _, open := <-w.Reports(); open {
				t.Error("Reports not closed after the watch ended")
			}
		}
	})
	first := <-w.Reports()
	if first == nil || first != w.Latest() {
		t.Fatalf("no initial report")
	}
	return w
}

// waitReport returns the first report that satisfies ok, failing after 5 s.
func waitReport(t *testing.T, w *Watcher, what string, ok func(*Report) bool) *Report {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-w.Reports():
			if ok(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no report with %s within 5s; latest: %v", what, w.Latest().Findings)
		}
	}
}

func hasCode(code string) func(*Report) bool {
	return func(r *Report) bool {
		for _, f := range r.Findings {
			if f.Code == code {
				return true
			}
		}
		return false
	}
}

func TestWatchWriteInPlaceOfIncludedFile(t *testing.T) {
	path := copyTree(t, "mainsailos")
	w := startWatch(t, path)
	if !w.Latest().OK() {
		t.Fatalf("initial findings: %v", w.Latest().Findings)
	}
	lmnt := filepath.Join(filepath.Dir(path), "lmnt.cfg")
	b, _ := os.ReadFile(lmnt)
	f, err := os.OpenFile(lmnt, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(strings.Replace(string(b), "[secure_print]\n", "", 1))
	f.Close()
	r := waitReport(t, w, "secure-print-missing", hasCode(CodeSecurePrintMissing))
	if r.OK() || !strings.Contains(r.StatusLine(), "[secure_print] section missing") {
		t.Errorf("StatusLine = %q", r.StatusLine())
	}
}

func TestWatchRenameOverSaveOfMainFile(t *testing.T) {
	path := copyTree(t, "mainsailos")
	w := startWatch(t, path)
	b, _ := os.ReadFile(path)
	// Klipper's SAVE_CONFIG and most editors: write a temp file, rename it over.
	tmp := filepath.Join(filepath.Dir(path), ".printer.cfg.tmp")
	if err := os.WriteFile(tmp, []byte(strings.Replace(string(b), "nozzle_diameter: 0.400", "nozzle_diameter: 0.600", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, filepath.Join(filepath.Dir(path), "printer-20261127_130000.cfg")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitReport(t, w, "nozzle 0.6", func(r *Report) bool { return r.Printer.NozzleDiameter().Value == 0.6 && r.OK() })
}

func TestWatchDeleteRecreateOfIncludedFile(t *testing.T) {
	path := copyTree(t, "mainsailos")
	w := startWatch(t, path)
	mainsail := filepath.Join(filepath.Dir(path), "mainsail.cfg")
	b, _ := os.ReadFile(mainsail)
	if err := os.Remove(mainsail); err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(b), "path: ~/printer_data/gcodes\n", "", 1)
	if err := os.WriteFile(mainsail, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitReport(t, w, "virtual-sdcard-path-missing", hasCode(CodeVirtualSDCardPath))
	if hasCode(CodeIncludeMissing)(r) {
		t.Errorf("final report still says the include is missing")
	}
}

func TestWatchNewFileMatchingGlobAndNewDirectory(t *testing.T) {
	path := copyTree(t, "kiauh")
	dir := filepath.Dir(path)
	// Move the lmnt sections out of the tree, and the macros directory away.
	if err := os.RemoveAll(filepath.Join(dir, "macros")); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, path)
	if !hasCode(CodeBridgeMissing)(w.Latest()) {
		t.Fatalf("initial findings: %v", w.Latest().Findings)
	}
	// The directory appears, then a file the glob matches.
	lmnt, _ := os.ReadFile(filepath.Join("testdata", "kiauh", "macros", "lmnt.cfg"))
	if err := os.Mkdir(filepath.Join(dir, "macros"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "macros", "lmnt.cfg"), lmnt, 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitReport(t, w, "an OK tree", func(r *Report) bool { return r.OK() })
	if r.Files[len(r.Files)-1] != filepath.Join(dir, "macros", "lmnt.cfg") {
		t.Errorf("Files = %v", r.Files)
	}
	// And an edit of the newly included file is seen too.
	if err := os.WriteFile(filepath.Join(dir, "macros", "lmnt.cfg"), []byte("[secure_print]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitReport(t, w, "bridge-missing again", hasCode(CodeBridgeMissing))
}

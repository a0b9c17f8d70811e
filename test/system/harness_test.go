//go:build system

package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the repository's top directory.
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// timings collects how long each stage took, printed at the end.
var timings struct {
	sync.Mutex
	lines []string
}

// stage logs the start of a stage and returns the function that records its
// duration.
func stage(t *testing.T, name string) func() {
	t.Helper()
	t.Logf("== %s", name)
	start := time.Now()
	return func() {
		d := time.Since(start).Round(100 * time.Millisecond)
		t.Logf("== %s: %v", name, d)
		timings.Lock()
		timings.lines = append(timings.lines, fmt.Sprintf("  %-62s %8v", name, d))
		timings.Unlock()
	}
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "system tests need root (nspawn, chroot, chown): run make test-system as root")
		os.Exit(1)
	}
	code := m.Run()
	cleanupGPG()
	for _, d := range atExit {
		os.RemoveAll(d)
	}
	fmt.Println("system test stages:")
	for _, l := range timings.lines {
		fmt.Println(l)
	}
	os.Exit(code)
}

// atExit lists directories shared between tests, removed when all are done.
var atExit []string

func removeAtExit(dir string) { atExit = append(atExit, dir) }

// cmdOpts tune run.
type cmdOpts struct {
	dir     string
	env     []string
	stdin   io.Reader
	timeout time.Duration
	quiet   bool // log the output only on failure
}

// run runs a command, logs it and its output, and fails the test on error.
func run(t *testing.T, o cmdOpts, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(t, o, name, args...)
	if err != nil {
		if o.quiet {
			t.Logf("output:\n%s", out)
		}
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// tryRun runs a command and returns its combined output and error.
func tryRun(t *testing.T, o cmdOpts, name string, args ...string) (string, error) {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = o.dir
	if cmd.Dir == "" {
		cmd.Dir = repoRoot
	}
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Stdin = o.stdin
	cmd.WaitDelay = 5 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t.Logf("$ %s %s", name, strings.Join(args, " "))
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %v: %w", o.timeout, err)
	}
	out := buf.String()
	if !o.quiet && strings.TrimSpace(out) != "" {
		t.Logf("%s", strings.TrimRight(out, "\n"))
	}
	return out, err
}

// tool finds a program on PATH or in Go's bin directory (goreleaser).
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gopath := strings.TrimSpace(run(t, cmdOpts{quiet: true}, "go", "env", "GOPATH"))
	p := filepath.Join(gopath, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not installed: run `make tools` (scripts/install-deps.sh --tools)", name)
	}
	return p
}

// goBuild builds a static binary of pkg into out with the version stamped.
func goBuild(t *testing.T, pkg, out, version string) {
	t.Helper()
	run(t, cmdOpts{env: []string{"CGO_ENABLED=0"}, quiet: true}, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/lmnt-marketplace/lmntd/internal/version.Version="+version, "-o", out, pkg)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

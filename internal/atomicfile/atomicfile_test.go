package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteReplacesWithPrivateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "new" {
		t.Fatalf("content = %q, %v; want new", got, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
	assertNoTemps(t, dir, 1)
}

func TestCreateRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.sealed")
	if err := Create(path, []byte("first")); err != nil {
		t.Fatal(err)
	}
	err := Create(path, []byte("second"))
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: err = %v, want fs.ErrExist", err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "first" {
		t.Fatalf("existing file changed to %q", got)
	}
	assertNoTemps(t, dir, 1)
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	if err := Write(filepath.Join(dir, "x"), []byte("x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

// assertNoTemps checks that no temp file was left behind.
func assertNoTemps(t *testing.T, dir string, want int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != want {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want %d file(s)", names, want)
	}
}

func TestWriteWithModeDespiteUmask(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lmntd.prom")
	if err := WriteWith(path, []byte("x 1\n"), Mode(0o644)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v, want 0644", fi.Mode().Perm())
	}
	assertNoTemps(t, dir, 1)
}

func TestWriteWithOwnerAndXattr(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "printer.cfg")
	// Chown to one's own ids is allowed without privilege; a user xattr
	// stands in for the ACL setup copies (system.* needs root).
	uid, gid := os.Getuid(), os.Getgid()
	err := WriteWith(path, []byte("[printer]\n"), Mode(0o640), Owner(uid, gid), Xattr("user.lmntd.test", []byte("kept")))
	if errors.Is(err, unix.ENOTSUP) {
		// The temp directory's filesystem has no user xattrs: check the rest.
		err = WriteWith(path, []byte("[printer]\n"), Mode(0o640), Owner(uid, gid))
	} else if err == nil {
		buf := make([]byte, 16)
		n, err := unix.Getxattr(path, "user.lmntd.test", buf)
		if err != nil || string(buf[:n]) != "kept" {
			t.Fatalf("xattr = %q, %v; want kept", buf[:n], err)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Fatalf("mode %v owner %d:%d, want 0640 %d:%d", fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
	}
	assertNoTemps(t, dir, 1)
}

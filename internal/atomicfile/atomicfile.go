// Package atomicfile writes small files (the sealed key, the token, the job
// journal, metadata stubs, the files lmnt setup edits) so that a crash or
// power cut leaves either the old or the new content, never a mix. Files
// are 0600 unless Mode or Owner say otherwise.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Option sets what the new file gets besides its content; the default is
// mode 0600, owned by the caller.
type Option func(*options)

type options struct {
	perm     os.FileMode
	uid, gid int // -1: the caller's
	xattrs   []xattr
}

type xattr struct {
	name  string
	value []byte
}

// Mode sets the file mode, for the rare file others must read (a metrics
// file node_exporter reads as its own user, a config file Klipper reads).
func Mode(perm os.FileMode) Option { return func(o *options) { o.perm = perm } }

// Owner gives the file to uid:gid (root only), so a file replaced for
// another user (printer.cfg of the Klipper user) stays theirs. A uid of
// -1 keeps the writer's.
func Owner(uid, gid int) Option { return func(o *options) { o.uid, o.gid = uid, gid } }

// Xattr sets an extended attribute before the file appears, e.g. the
// access ACL copied from the file it replaces.
func Xattr(name string, value []byte) Option {
	return func(o *options) { o.xattrs = append(o.xattrs, xattr{name, value}) }
}

// Write replaces path with data: a 0600 temp file in the same directory,
// fsync, rename over path, fsync the directory.
func Write(path string, data []byte) error { return WriteWith(path, data) }

// WriteWith is Write with options (mode, owner, extended attributes), all
// set on the temp file before it is renamed into place.
func WriteWith(path string, data []byte, opts ...Option) error {
	tmp, err := writeTemp(path, data, opts)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// Create writes path durably like Write but fails with an error matching
// fs.ErrExist if path already exists: a hard link, unlike a rename, never
// replaces a file.
func Create(path string, data []byte) error {
	tmp, err := writeTemp(path, data, nil)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// tempMark is in the name of every temporary file (".NAME.tmp-RANDOM").
const tempMark = ".tmp-"

// IsTemp reports whether name (a base name) is one of this package's
// temporary files: a write a crash interrupted leaves one behind, which a
// directory's owner may sweep.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMark)
}

func writeTemp(path string, data []byte, opts []Option) (string, error) {
	o := options{perm: 0o600, uid: -1, gid: -1}
	for _, opt := range opts {
		opt(&o)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+tempMark+"*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", err
	}
	// CreateTemp uses 0600; set the mode explicitly since it is the point
	// (and the umask does not apply to Chmod).
	if err := f.Chmod(o.perm); err != nil {
		return fail(err)
	}
	if o.uid >= 0 {
		if err := f.Chown(o.uid, o.gid); err != nil {
			return fail(err)
		}
	}
	for _, x := range o.xattrs {
		if err := unix.Fsetxattr(int(f.Fd()), x.name, x.value, 0); err != nil {
			return fail(fmt.Errorf("setting %s on %s: %w", x.name, path, err))
		}
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// SyncDir fsyncs a directory, making a rename or link in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

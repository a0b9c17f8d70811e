package setup

// The metadata stub folder (issue 18): <printer_data>/gcodes/.lmnt, where
// lmntd keeps each running job's metadata stub (internal/mdstub) so that
// Moonraker, Mainsail and Fluidd show the job like a local file.
//
// Owner lmntd, group Klipper's primary group, mode 2770: lmntd writes and
// removes its stubs; Klipper's user (Moonraker runs as the same user) reads
// them and creates Moonraker's .thumbs folder inside, and the setgid bit
// keeps that group on everything made there. A default ACL gives both
// users rwx on what Moonraker creates (its .thumbs), and lmntd's user gets
// search on the folders above, so it reaches the folder outside the
// sandbox too. Inside lmntd.service the drop-in binds exactly this folder
// read-write (BindPaths=), nothing else of the home directory.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// StubFolderName is the folder under Klipper's gcodes directory.
const StubFolderName = ".lmnt"

const stubFolderMode = fs.ModeDir | fs.ModeSetgid | 0o770

// stubFolder is the folder's host path, "" without a printer_data layout.
func stubFolder(in Instance) string {
	if in.DataDir == "" {
		return ""
	}
	return path.Join(in.DataDir, "gcodes", StubFolderName)
}

// createStubFolder makes the folder and grants its access.
func (r *runner) createStubFolder(in Instance, svc account) error {
	folder := stubFolder(in)
	if folder == "" {
		r.step("stubs", Skipped, "no printer_data directory: metadata stubs stay off", "")
		return nil
	}
	gcodes := path.Dir(folder)
	if st, err := os.Stat(r.at(gcodes)); err != nil || !st.IsDir() {
		r.step("stubs", Skipped, gcodes+" does not exist: metadata stubs stay off (run lmnt setup again once it does)", "")
		return nil
	}
	changed := false
	st, err := os.Lstat(r.at(folder))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !r.opts.DryRun {
			if err := os.Mkdir(r.at(folder), 0o700); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			r.m.StubFolder = folder
			if err := r.saveManifest(); err != nil {
				return err
			}
		}
		changed = true
	case err != nil:
		return fmt.Errorf("setup: %w", err)
	case !st.IsDir():
		return fmt.Errorf("setup: %s exists and is not a directory; move it away and run lmnt setup again", folder)
	}
	if !r.opts.DryRun {
		st, err = os.Lstat(r.at(folder))
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		uid, gid := ownerOf(st)
		if uid != svc.UID || gid != in.GID {
			if err := os.Lchown(r.at(folder), svc.UID, in.GID); err != nil {
				return fmt.Errorf("setup: %s: %w", folder, err)
			}
			changed = true
		}
		// chmod after chown: chown clears the setgid bit.
		if st.Mode()&(fs.ModeSetgid|fs.ModePerm) != stubFolderMode&(fs.ModeSetgid|fs.ModePerm) || changed {
			if err := os.Chmod(r.at(folder), stubFolderMode); err != nil {
				return fmt.Errorf("setup: %s: %w", folder, err)
			}
		}
	}
	grants := []aclTarget{{host: folder, perms: "rwx", dflt: true}}
	for d := gcodes; d != "/" && d != "."; d = path.Dir(d) {
		grants = append(grants, aclTarget{host: d, perms: "--x"})
	}
	for _, t := range grants {
		uids := []int{svc.UID}
		if t.dflt {
			uids = append(uids, in.UID) // Moonraker's .thumbs inside
		}
		for _, uid := range uids {
			grant := grantACL
			if t.dflt {
				grant = grantDefaultACL
			}
			if r.opts.DryRun {
				if _, err := os.Stat(r.at(t.host)); err != nil {
					continue // the folder is not there yet to inspect
				}
			}
			g, err := grant(r.ctx, r.at(t.host), t.host, uid, t.perms, r.opts.DryRun)
			if err != nil {
				return err
			}
			if g == nil {
				continue
			}
			changed = true
			if !r.opts.DryRun {
				r.m.ACLs = append(r.m.ACLs, *g)
				if err := r.saveManifest(); err != nil {
					return err
				}
			}
		}
	}
	if !changed {
		r.step("stubs", Unchanged, folder+" is ready for metadata stubs", "")
		return nil
	}
	r.step("stubs", Changed, fmt.Sprintf("%s: owner %s, group of %s, mode 2770, default ACL rwx for both", folder, ServiceUser, in.User), "")
	return nil
}

// undoStubFolder removes the folder setup created, with whatever stubs and
// Moonraker thumbnails are left in it (all derived from lmntd's jobs).
func (r *runner) undoStubFolder() error {
	if r.m.StubFolder == "" {
		return nil
	}
	if !r.opts.DryRun {
		if err := os.RemoveAll(r.at(r.m.StubFolder)); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	r.step("stubs", Changed, "deleted "+r.m.StubFolder, "")
	return nil
}

func ownerOf(st fs.FileInfo) (uid, gid int) {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(sys.Uid), int(sys.Gid)
	}
	return -1, -1
}

// stubBindLine is the drop-in's line that lets lmntd write the folder.
func stubBindLine(in Instance) (string, error) {
	folder := stubFolder(in)
	if folder == "" {
		return "", nil
	}
	p, err := unitPath(folder)
	if err != nil {
		return "", err
	}
	// "-": a missing folder (no gcodes directory yet) must not stop lmntd.
	return "# lmntd writes the jobs' metadata stubs here, and nowhere else.\nBindPaths=-" + filepath.Clean(p) + "\n", nil
}

package setup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// POSIX ACLs give lmntd's user exactly the access it needs to read Klipper's
// config: search (x) on each directory down to the config directory that
// others cannot search (Debian 12 homes are 0700), and read on the config
// tree where others cannot read. setfacl and getfacl (package acl) do the
// work, with numeric uids so a fixture tree needs no host user.
//
// Measured in a booted Debian 12 container: inside lmntd.service
// (ProtectHome=tmpfs plus the BindReadOnlyPaths= drop-in) the directories
// above the bind are systemd's own 0755 tmpfs ones, so there the search
// entries are not what lets lmntd in; the config tree's own modes still
// apply through the bind, so the read entries are. The search entries make
// the same access work for lmntd's user outside that sandbox (ProtectHome=
// read-only in an owner's override, diagnostics run as lmntd).
//
// setfacl normally recomputes the mask as the union of the group-class
// entries, which could hand the owning group rights an existing mask held
// back. So setup always sets the mask itself, to the old mask plus exactly
// the bits it grants, and restores the old mask on removal.

// aclGrant is one ACL entry setup added, recorded for --remove.
type aclGrant struct {
	Path string `json:"path"` // host path
	UID  int    `json:"uid"`
	// Default marks an entry of a directory's default ACL, which new files
	// inherit: Klipper's SAVE_CONFIG and Moonraker's editor replace files,
	// and a replaced file would otherwise lose lmntd's access.
	Default bool `json:"default,omitempty"`
	// Perms is what was granted ("--x", "r-x", "r--").
	Perms string `json:"perms"`
	// Previous is the uid's entry before ("" when it had none).
	Previous string `json:"previous,omitempty"`
	// PreviousMask is the mask before ("" when there was none).
	PreviousMask string `json:"previous_mask,omitempty"`
}

// aclState is what getfacl shows for one file, access or default ACL.
type aclState struct {
	user string // the uid's own entry perms, "" when absent
	mask string // "" when there is no mask (a minimal ACL)
	any  bool   // any entry at all (for default ACLs: whether one exists)
	// named counts user:N and group:N entries other than the uid's.
	named int
}

var errACLTool = errors.New("setup: ACL tool failed")

// getACL reads the access and default ACL of path as seen for uid.
func getACL(ctx context.Context, path string, uid int) (access, dflt aclState, err error) {
	out, err := runTool(ctx, "getfacl", "-c", "-p", "-n", "-E", "--", path)
	if err != nil {
		return access, dflt, err
	}
	own := "user:" + strconv.Itoa(uid) + ":"
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		st := &access
		if rest, ok := strings.CutPrefix(line, "default:"); ok {
			st, line = &dflt, rest
		}
		st.any = true
		switch {
		case strings.HasPrefix(line, own):
			st.user = strings.TrimPrefix(line, own)
		case strings.HasPrefix(line, "mask::"):
			st.mask = strings.TrimPrefix(line, "mask::")
		case strings.HasPrefix(line, "user::"), strings.HasPrefix(line, "group::"), strings.HasPrefix(line, "other::"):
		default:
			st.named++
		}
	}
	return access, dflt, nil
}

func runTool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(err, exec.ErrNotFound) {
			msg = "not installed (apt install acl)"
		}
		return "", fmt.Errorf("%w: %s %s: %v: %s", errACLTool, name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// permsUnion merges two "rwx"-style permission strings.
func permsUnion(a, b string) string {
	out := []byte("---")
	for i, c := range "rwx" {
		if (len(a) == 3 && a[i] == byte(c)) || (len(b) == 3 && b[i] == byte(c)) {
			out[i] = byte(c)
		}
	}
	return string(out)
}

// permsCover reports whether have includes every bit of want.
func permsCover(have, want string) bool { return permsUnion(have, want) == have }

// modeGroupPerms renders the group bits of mode (the mask of a file with an
// extended ACL, the group entry of one without).
func modeGroupPerms(mode fs.FileMode) string {
	var b [3]byte
	for i, bit := range []fs.FileMode{0o040, 0o020, 0o010} {
		b[i] = "rwx"[i]
		if mode&bit == 0 {
			b[i] = '-'
		}
	}
	return string(b[:])
}

// othersCover reports whether the "other" bits alone give want.
func othersCover(mode fs.FileMode, want string) bool {
	for i, bit := range []fs.FileMode{0o004, 0o002, 0o001} {
		if want[i] != '-' && mode&bit == 0 {
			return false
		}
	}
	return true
}

// grantACL gives uid want on path (a path under root; host is its host
// name) unless others or an existing entry already allow it. It returns the
// grant to record, or nil when nothing was needed. dryRun only decides.
func grantACL(ctx context.Context, path, host string, uid int, want string, dryRun bool) (*aclGrant, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if othersCover(st.Mode(), want) {
		return nil, nil
	}
	cur, _, err := getACL(ctx, path, uid)
	if err != nil {
		return nil, err
	}
	if cur.user != "" && permsCover(cur.user, want) && permsCover(cur.mask, want) {
		return nil, nil
	}
	g := &aclGrant{Path: host, UID: uid, Perms: permsUnion(cur.user, want), Previous: cur.user, PreviousMask: cur.mask}
	if dryRun {
		return g, nil
	}
	oldMask := cur.mask
	if oldMask == "" {
		oldMask = modeGroupPerms(st.Mode())
	}
	entry := fmt.Sprintf("u:%d:%s,m::%s", uid, g.Perms, permsUnion(oldMask, want))
	if _, err := runTool(ctx, "setfacl", "-n", "-m", entry, "--", path); err != nil {
		return nil, err
	}
	return g, nil
}

// grantDefaultACL adds want for uid to the default ACL of directory path.
func grantDefaultACL(ctx context.Context, path, host string, uid int, want string, dryRun bool) (*aclGrant, error) {
	_, cur, err := getACL(ctx, path, uid)
	if err != nil {
		return nil, err
	}
	if cur.user != "" && permsCover(cur.user, want) && permsCover(cur.mask, want) {
		return nil, nil
	}
	g := &aclGrant{Path: host, UID: uid, Default: true, Perms: permsUnion(cur.user, want), Previous: cur.user, PreviousMask: cur.mask}
	if dryRun {
		return g, nil
	}
	entries := fmt.Sprintf("u:%d:%s", uid, g.Perms)
	if !cur.any {
		// A new default ACL would otherwise copy the directory's own mode
		// for group and others, and a default ACL overrides the umask: an
		// owner whose umask keeps files private would see new files become
		// readable by all. The files here are private already, so new ones
		// stay private to the owner (and lmntd).
		entries = "u::rwx,g::---,o::---," + entries
	}
	if _, err := runTool(ctx, "setfacl", "-d", "-m", entries, "--", path); err != nil {
		return nil, err
	}
	return g, nil
}

// revokeACL undoes a grant: the previous entry and mask come back, or, when
// there was no ACL before, the entry goes and the ACL folds back into plain
// mode bits (a default ACL disappears).
func revokeACL(ctx context.Context, path string, g aclGrant) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil // gone since: nothing left to undo
	}
	uid := fmt.Sprintf("u:%d", g.UID)
	if g.Default {
		if g.Previous != "" {
			_, err := runTool(ctx, "setfacl", "-d", "-m", uid+":"+g.Previous, "--", path)
			return err
		}
		_, dflt, err := getACL(ctx, path, g.UID)
		if err != nil {
			return err
		}
		if g.PreviousMask == "" && dflt.named == 0 {
			_, err = runTool(ctx, "setfacl", "-k", "--", path)
			return err
		}
		_, err = runTool(ctx, "setfacl", "-d", "-x", uid, "--", path)
		return err
	}
	switch {
	case g.Previous != "":
		_, err := runTool(ctx, "setfacl", "-n", "-m", fmt.Sprintf("%s:%s,m::%s", uid, g.Previous, g.PreviousMask), "--", path)
		return err
	case g.PreviousMask != "":
		if _, err := runTool(ctx, "setfacl", "-n", "-x", uid, "--", path); err != nil {
			return err
		}
		_, err := runTool(ctx, "setfacl", "-n", "-m", "m::"+g.PreviousMask, "--", path)
		return err
	default:
		// The mask goes with the entry when nothing else needs it, so the
		// ACL folds back into plain mode bits; entries the owner added since
		// keep it.
		access, _, err := getACL(ctx, path, g.UID)
		if err != nil {
			return err
		}
		if access.named == 0 {
			_, err = runTool(ctx, "setfacl", "-x", uid+",m::", "--", path)
		} else {
			_, err = runTool(ctx, "setfacl", "-x", uid, "--", path)
		}
		return err
	}
}

// maxConfigEntries bounds the walk of the config directory.
const maxConfigEntries = 4096

// aclTarget is one ACL entry lmntd's user may need.
type aclTarget struct {
	host  string
	perms string
	// dflt: a default ACL entry of a directory whose files others cannot
	// read, so the files Klipper and Moonraker write there later are
	// readable too.
	dflt bool
}

// aclTargets lists what lmntd's user must reach to read configDir (host
// path): each ancestor needs search, the directory tree read+search and
// files read. Whether an entry is really needed is grantACL's decision.
func aclTargets(root, configDir string) ([]aclTarget, error) {
	var out []aclTarget
	var ancestors []string
	for d := filepath.Dir(configDir); d != "/" && d != "."; d = filepath.Dir(d) {
		ancestors = append([]string{d}, ancestors...)
	}
	for _, d := range ancestors {
		out = append(out, aclTarget{host: d, perms: "--x"})
	}
	n := 0
	err := filepath.WalkDir(filepath.Join(root, configDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxConfigEntries {
			return fmt.Errorf("setup: more than %d entries under %s; grant access by hand", maxConfigEntries, configDir)
		}
		host := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		switch {
		case d.IsDir():
			out = append(out, aclTarget{host: host, perms: "r-x"})
			private, err := hasPrivateFiles(p)
			if err != nil {
				return err
			}
			if private {
				out = append(out, aclTarget{host: host, perms: "r-x", dflt: true})
			}
		case d.Type().IsRegular():
			out = append(out, aclTarget{host: host, perms: "r--"})
		}
		return nil // symlinks are not followed: their targets are not the config's to open
	})
	return out, err
}

// hasPrivateFiles reports whether dir (or its ACL) keeps files from others.
func hasPrivateFiles(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return false, err
		}
		if !othersCover(info.Mode(), "r--") {
			return true, nil
		}
	}
	return false, nil
}

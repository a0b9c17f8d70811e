package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Group membership is edited in /etc/group and /etc/gshadow directly, the
// way systemd-sysusers does: under shadow-utils' lock (/etc/.pwd.lock, the
// lckpwdf(3) lock that useradd, gpasswd and sysusers all take), each file
// replaced atomically, the previous version kept as "group-" like
// shadow-utils. This works on fixture trees (Options.Root), where usermod
// and gpasswd cannot.

// ErrNoGroup means a group lmnt needs does not exist (the package creates it).
var ErrNoGroup = errors.New("setup: group not found")

const pwdLockTimeout = 15 * time.Second // lckpwdf's own timeout

// lockAccounts takes the lckpwdf lock of the tree at root.
func lockAccounts(root string) (unlock func(), err error) {
	path := filepath.Join(root, "etc", ".pwd.lock")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("setup: opening the account lock %s: %w", path, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	deadline := time.Now().Add(pwdLockTimeout)
	for {
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("setup: %s is locked by another account tool (useradd, gpasswd?): %w", path, err)
		}
		time.Sleep(100 * time.Millisecond) // lckpwdf polls too; the holder is another process
	}
	return func() { f.Close() }, nil
}

// groupMembers returns the members of group in <root>/etc/group.
func groupMembers(root, group string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "etc", "group"))
	if err != nil {
		return nil, fmt.Errorf("setup: reading the group database: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == group {
			return splitMembers(f[3]), nil
		}
	}
	return nil, fmt.Errorf("%w: %q in %s (is lmntd installed? its package creates it)", ErrNoGroup, group, filepath.Join(root, "etc", "group"))
}

func splitMembers(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// setGroupMember adds (add=true) or removes user from group in /etc/group
// and, when present, /etc/gshadow. It reports whether anything changed.
func setGroupMember(root, group, user string, add bool) (bool, error) {
	unlock, err := lockAccounts(root)
	if err != nil {
		return false, err
	}
	defer unlock()
	changed := false
	for _, spec := range []struct {
		name     string
		field    int
		optional bool
	}{{"group", 3, false}, {"gshadow", 3, true}} {
		path := filepath.Join(root, "etc", spec.name)
		data, err := os.ReadFile(path)
		if spec.optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return changed, fmt.Errorf("setup: reading %s: %w", path, err)
		}
		lines := strings.Split(string(data), "\n")
		found, fileChanged := false, false
		for i, line := range lines {
			f := strings.Split(line, ":")
			if len(f) <= spec.field || f[0] != group {
				continue
			}
			found = true
			members := splitMembers(f[spec.field])
			has := slices.Contains(members, user)
			switch {
			case add && !has:
				members = append(members, user)
			case !add && has:
				members = slices.DeleteFunc(members, func(m string) bool { return m == user })
			default:
				continue
			}
			f[spec.field] = strings.Join(members, ",")
			lines[i] = strings.Join(f, ":")
			fileChanged = true
		}
		if !found {
			if spec.optional {
				continue
			}
			return changed, fmt.Errorf("%w: %q in %s (is lmntd installed? its package creates it)", ErrNoGroup, group, path)
		}
		if !fileChanged {
			continue
		}
		// The backup shadow-utils keeps, then the new file in one rename.
		if err := writeFileLike(path+"-", data, path); err != nil {
			return changed, err
		}
		if err := writeFileLike(path, []byte(strings.Join(lines, "\n")), path); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

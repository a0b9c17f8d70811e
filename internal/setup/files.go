package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lmnt-marketplace/lmntd/internal/atomicfile"
)

// aclXattr holds a file's access ACL.
const aclXattr = "system.posix_acl_access"

// writeFileLike replaces path durably (atomicfile) with the mode, owner and
// access ACL of the file like, so a printer.cfg owned by the Klipper user
// stays the user's, and stays readable by whoever could read it. When like
// does not exist the file is root's, mode 0644.
func writeFileLike(path string, data []byte, like string) error {
	mode, uid, gid := fs.FileMode(0o644), -1, -1
	var acl []byte
	if st, err := os.Stat(like); err == nil {
		mode = st.Mode().Perm()
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
		if acl, err = getXattr(like, aclXattr); err != nil {
			return fmt.Errorf("setup: reading the ACL of %s: %w", like, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("setup: %w", err)
	}
	return writeFileAtomic(path, data, mode, uid, gid, acl)
}

// getXattr returns an extended attribute, nil when the file has none.
func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Getxattr(path, name, buf)
		switch {
		case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case errors.Is(err, unix.ERANGE):
			buf = make([]byte, 2*len(buf))
			continue
		case err != nil:
			return nil, err
		}
		return buf[:n], nil
	}
}

// writeFileAtomic replaces path durably with data, mode, owner (uid -1:
// root's, as lmnt setup runs) and access ACL (nil: none).
func writeFileAtomic(path string, data []byte, mode fs.FileMode, uid, gid int, acl []byte) error {
	opts := []atomicfile.Option{atomicfile.Mode(mode), atomicfile.Owner(uid, gid)}
	if acl != nil {
		opts = append(opts, atomicfile.Xattr(aclXattr, acl))
	}
	if err := atomicfile.WriteWith(path, data, opts...); err != nil {
		return fmt.Errorf("setup: writing %s: %w", path, err)
	}
	return nil
}

// unifiedDiff renders the change from old to new as a unified diff with three
// lines of context. The files setup edits are small, so the plain
// O(n·m) longest-common-subsequence table is fine.
func unifiedDiff(name, old, new string) string {
	if old == new {
		return ""
	}
	a, b := splitLines(old), splitLines(new)
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte // ' ', '-', '+'
		text string
		ai   int // line index in a (for ' ' and '-') or insertion point
		bi   int
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, op{' ', a[i], i, j})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, op{'+', b[j], i, j})
			j++
		default:
			ops = append(ops, op{'-', a[i], i, j})
			i++
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s (after lmnt setup)\n", name, name)
	const ctx = 3
	for k := 0; k < len(ops); {
		if ops[k].kind == ' ' {
			k++
			continue
		}
		// A hunk: back up ctx lines, run until ctx+1 unchanged lines follow
		// the last change.
		start := max(0, k-ctx)
		end := k
		for end < len(ops) {
			if ops[end].kind != ' ' {
				end++
				continue
			}
			run := 0
			for end+run < len(ops) && ops[end+run].kind == ' ' {
				run++
			}
			if end+run == len(ops) || run > 2*ctx {
				end += min(run, ctx)
				break
			}
			end += run
		}
		aCount, bCount := 0, 0
		for _, o := range ops[start:end] {
			if o.kind != '+' {
				aCount++
			}
			if o.kind != '-' {
				bCount++
			}
		}
		fmt.Fprintf(&out, "@@ -%d,%d +%d,%d @@\n", ops[start].ai+1, aCount, ops[start].bi+1, bCount)
		for _, o := range ops[start:end] {
			out.WriteByte(o.kind)
			out.WriteString(o.text)
			out.WriteByte('\n')
		}
		k = end
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

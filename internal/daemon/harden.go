package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// hardenProcess makes lmntd non-dumpable before it reads a key: no core
// dump even where LimitCORE= is not set (lmntd run by hand, in a
// container), and no ptrace attach or /proc/<pid>/mem, environ or fd access
// by other processes of the same uid; /proc/<pid> becomes root's.
func hardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

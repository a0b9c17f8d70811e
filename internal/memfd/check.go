package memfd

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Errors of CheckSealed, the receiver-side check of an fd that arrived over
// a socket. Each one is returned wrapped with the details.
var (
	ErrNotRegular     = errors.New("received fd is not a regular file")
	ErrNotSealable    = errors.New("received fd is not a sealable memfd")
	ErrMissingSeals   = errors.New("received memfd lacks the write, grow and shrink seals")
	ErrReopenReadOnly = errors.New("cannot reopen received fd read-only")
)

// CheckSealed verifies what a receiver must know before it trusts a
// received fd: it is a regular file, it supports sealing (a memfd), and the
// WRITE, GROW and SHRINK seals are set, so its content can never change.
// It returns the file size.
func CheckSealed(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("memfd: stat received fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("%w (fd %d, mode %#o)", ErrNotRegular, fd, st.Mode&unix.S_IFMT)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return 0, fmt.Errorf("%w (fd %d: %v)", ErrNotSealable, fd, err)
	}
	if seals&ContentSeals != ContentSeals {
		return 0, fmt.Errorf("%w (fd %d has seals %#x)", ErrMissingSeals, fd, seals)
	}
	return st.Size, nil
}

// ReopenReadOnly opens procSelfFD/<fd> (normally /proc/self/fd) read-only.
// A received fd shares its file offset with the sender's copy; the reopened
// file has its own, so reading it never disturbs the sender, and it cannot
// be written even if seals were somehow absent.
func ReopenReadOnly(procSelfFD string, fd int) (*os.File, error) {
	path := procSelfFD + "/" + strconv.Itoa(fd)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReopenReadOnly, err)
	}
	return f, nil
}

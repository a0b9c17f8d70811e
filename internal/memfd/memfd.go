// Package memfd holds decrypted G-code in memory only: an anonymous,
// sealable file (memfd_create) that is written once, sealed against any
// further change, optionally locked into RAM and kept out of core dumps, and
// then handed to Klipper over a unix socket with SCM_RIGHTS.
//
// The lifecycle is Create → Write… → Seal → (Lock) → send the Fd → Close.
// A sealed memfd cannot be written, truncated or grown by anyone holding it,
// so the receiver can trust that the bytes it prints are the bytes the
// daemon checked.
package memfd

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// FullSeals are the seals Seal applies: the content and size are frozen and
// the seal set itself can no longer change.
const FullSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL

// ContentSeals are the seals a receiver must see before it trusts the bytes:
// nobody can write, truncate or extend the file any more.
const ContentSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

var (
	// ErrClosed is returned by operations on a File after Close.
	ErrClosed = errors.New("memfd: file already closed")
	// ErrNotSealed is returned by Lock before Seal: a shared mapping taken
	// before sealing would make the write seal fail (EBUSY).
	ErrNotSealed = errors.New("memfd: file is not sealed")
	// ErrLockLimited means RLIMIT_MEMLOCK (or the lack of CAP_IPC_LOCK)
	// prevented locking the pages in RAM. The file stays usable; its pages
	// may reach swap unless the service runs with MemorySwapMax=0.
	ErrLockLimited = errors.New("memfd: memory lock limit prevents mlock")
)

// File is a sealable anonymous in-memory file. Its methods are safe for
// concurrent use; Write is meant for a single writer.
type File struct {
	mu     sync.Mutex
	fd     int
	name   string
	mapped []byte // read-only shared mapping held by Lock, nil otherwise
	closed bool
}

// Create makes a new empty memfd named name (the name is only a label
// visible in /proc/<pid>/fd, "memfd:<name>"). It is close-on-exec and allows
// sealing.
func Create(name string) (*File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: create %q: %w", name, err)
	}
	return &File{fd: fd, name: name}, nil
}

// Name is the label the memfd was created with.
func (f *File) Name() string { return f.name }

// Fd is the file descriptor, valid until Close. Callers must not close it.
func (f *File) Fd() int { return f.fd }

// Write appends p, retrying partial writes and EINTR. After Seal it fails
// with EPERM, as the kernel enforces F_SEAL_WRITE.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	written := 0
	for written < len(p) {
		n, err := unix.Write(f.fd, p[written:])
		if n > 0 {
			written += n
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return written, fmt.Errorf("memfd: write %q: %w", f.name, err)
		}
		if n == 0 {
			return written, fmt.Errorf("memfd: write %q: %w", f.name, unix.EIO)
		}
	}
	return written, nil
}

// Seal applies FullSeals. From then on the content and size are immutable
// for every holder of the file.
func (f *File) Seal() error {
	if err := f.usable(); err != nil {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(f.fd), unix.F_ADD_SEALS, FullSeals); err != nil {
		return fmt.Errorf("memfd: seal %q: %w", f.name, err)
	}
	return nil
}

// Seals reports the seals currently set (F_SEAL_* bits).
func (f *File) Seals() (int, error) {
	if err := f.usable(); err != nil {
		return 0, err
	}
	return getSeals(f.fd)
}

// Size is the file's current length in bytes.
func (f *File) Size() (int64, error) {
	if err := f.usable(); err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, fmt.Errorf("memfd: stat %q: %w", f.name, err)
	}
	return st.Size, nil
}

// Lock pins the file's pages in RAM and keeps them out of core dumps. It
// maps the sealed file read-only (MAP_SHARED, so the mapping and the file
// share pages), marks the mapping MADV_DONTDUMP and mlocks it. It must be
// called after Seal. When the memlock limit forbids the lock the mapping is
// released and the returned error wraps ErrLockLimited: callers log it once
// and carry on, the file is still valid. Locking an empty file is a no-op.
func (f *File) Lock() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if f.mapped != nil {
		return nil
	}
	seals, err := getSeals(f.fd)
	if err != nil {
		return err
	}
	if seals&unix.F_SEAL_WRITE == 0 {
		return ErrNotSealed
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return fmt.Errorf("memfd: stat %q: %w", f.name, err)
	}
	if st.Size == 0 {
		return nil
	}
	if int64(int(st.Size)) != st.Size {
		return fmt.Errorf("memfd: lock %q: size %d does not fit the address space", f.name, st.Size)
	}
	mem, err := unix.Mmap(f.fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("memfd: map %q: %w", f.name, err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		_ = unix.Munmap(mem)
		return fmt.Errorf("memfd: madvise DONTDUMP %q: %w", f.name, err)
	}
	if err := unix.Mlock(mem); err != nil {
		_ = unix.Munmap(mem)
		if err == unix.ENOMEM || err == unix.EPERM || err == unix.EAGAIN {
			return fmt.Errorf("%w: %d bytes of %q: %v", ErrLockLimited, st.Size, f.name, err)
		}
		return fmt.Errorf("memfd: mlock %q: %w", f.name, err)
	}
	f.mapped = mem
	return nil
}

// Locked reports whether Lock succeeded and the pages are pinned.
func (f *File) Locked() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mapped != nil
}

// Close unmaps the file and closes the descriptor. It is idempotent. Other
// holders of the file (a receiver that got it over SCM_RIGHTS) keep their
// copy; the memory is freed when the last one is closed.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	if f.mapped != nil {
		// munmap also drops the mlock.
		if err := unix.Munmap(f.mapped); err != nil {
			errs = append(errs, fmt.Errorf("memfd: unmap %q: %w", f.name, err))
		}
		f.mapped = nil
	}
	if err := unix.Close(f.fd); err != nil {
		errs = append(errs, fmt.Errorf("memfd: close %q: %w", f.name, err))
	}
	return errors.Join(errs...)
}

func (f *File) usable() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	return nil
}

func getSeals(fd int) (int, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return 0, fmt.Errorf("memfd: get seals of fd %d: %w", fd, err)
	}
	return seals, nil
}

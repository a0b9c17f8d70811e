package identity

import (
	"os"

	"golang.org/x/sys/unix"
)

// secretPage is one anonymous page holding a private key: mlocked so it never
// reaches swap, MADV_DONTDUMP so it never reaches a core dump, and outside the
// Go heap so the runtime never copies it. Failures to lock or to exclude it
// from dumps degrade (recorded in locked) rather than fail: the service's
// MemorySwapMax=0 and LimitCORE=0 cover the same risks.
type secretPage struct {
	mem    []byte
	mapped bool // mem is an mmap'd page (false: heap fallback)
	locked bool
}

func newSecretPage() *secretPage {
	size := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		// Out of address space: fall back to the heap rather than failing
		// pairing; the key is still wiped on Zero.
		return &secretPage{mem: make([]byte, KeySize)}
	}
	p := &secretPage{mem: mem, mapped: true}
	p.locked = unix.Mlock(mem) == nil
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	return p
}

func (p *secretPage) key() *[KeySize]byte { return (*[KeySize]byte)(p.mem[:KeySize]) }

func (p *secretPage) wipe() {
	clear(p.mem)
	if p.mapped {
		if p.locked {
			_ = unix.Munlock(p.mem)
		}
		_ = unix.Munmap(p.mem)
	}
	p.mem = nil
}

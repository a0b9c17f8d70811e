//go:build !(amd64 || arm64) || purego

package jobcrypt

// Elsewhere (32-bit arm, purego builds) crypto/cipher's kernel is the only
// one.
const hardwareCBCAvailable = false

func newHardwareCBC([]byte) (cbcKernel, bool) { return nil, false }

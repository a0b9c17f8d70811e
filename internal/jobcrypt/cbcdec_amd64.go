//go:build !purego

package jobcrypt

import "golang.org/x/sys/cpu"

// hardwareCBCAvailable: the kernel needs AES-NI (and SSE2, which every
// amd64 CPU has).
var hardwareCBCAvailable = cpu.X86.HasAES

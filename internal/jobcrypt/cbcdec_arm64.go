//go:build !purego

package jobcrypt

import "golang.org/x/sys/cpu"

// hardwareCBCAvailable: the kernel needs the ARMv8 cryptography extensions
// (AESD, AESIMC), which the Raspberry Pi 5 and the BTT CB1 have and the
// Raspberry Pi 4 lacks.
var hardwareCBCAvailable = cpu.ARM64.HasAES

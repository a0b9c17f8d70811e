// Package testhook holds switches that only test tools may flip. Go's
// internal-package rule makes it importable from internal/klipper and its
// subdirectories alone, so the daemon proper can never set them.
package testhook

import "sync/atomic"

// SkipSealCheck lets the bridge server hand over an unsealed memfd. The
// bridge harness sets it for one print to prove the Klipper extra refuses
// such a file; the daemon leaves it false.
var SkipSealCheck atomic.Bool

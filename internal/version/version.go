// Package version holds the build's version, stamped by the linker
// (-X github.com/lmnt-marketplace/lmntd/internal/version.Version=...).
package version

// Version is "dev" in builds that were not stamped.
var Version = "dev"

// Package system holds lmntd's system tests (build tag "system", run by
// `make test-system`): the hardened units as systemd scores and verifies
// them, the goreleaser snapshot and its cross-built binaries under qemu, the
// signed apt repository, and a booted Debian 12 container in which the
// package is installed, wired into a Klipper stand-in with `lmnt setup`,
// prints a job from the marketplace simulator, is upgraded and purged.
//
// They need root, systemd-container, debootstrap, qemu-user-static,
// apt-utils, gnupg, acl and goreleaser (scripts/install-deps.sh --tools).
package system

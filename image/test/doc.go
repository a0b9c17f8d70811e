// Package imagetest checks the image glue of image/ on real root
// filesystems: each builder's drop-in (pi-gen stage, CustoPiZer module,
// Armbian customize-image.sh) applied the way its builder applies it to a
// foreign arm64 Debian 12 root, and the first-boot unit booted under
// systemd-nspawn on an amd64 root.
//
// The tests carry the build tag "system": they need root, debootstrap,
// qemu-user and systemd-nspawn, and take minutes. Run them with
// `make test-image`, or `go test -tags system ./image/test/` once the .debs
// are in dist/ (or $IMAGE_TEST_DEB_DIR).
package imagetest

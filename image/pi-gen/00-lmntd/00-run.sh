#!/bin/bash -e
# pi-gen sub-stage, host side: put the lmntd bundle into the image's root.
# pi-gen runs this from the sub-stage directory with ROOTFS_DIR set; the
# chroot side is 01-run-chroot.sh. Not /tmp or /run: pi-gen's on_chroot
# mounts a fresh tmpfs over both, which would hide the bundle.
: "${ROOTFS_DIR:?ROOTFS_DIR is not set: run this stage from pi-gen}"
rm -rf "${ROOTFS_DIR}/var/tmp/lmntd-image"
install -d -m 0755 "${ROOTFS_DIR}/var/tmp/lmntd-image"
cp -R --preserve=mode,links files/lmntd-image/. "${ROOTFS_DIR}/var/tmp/lmntd-image/"

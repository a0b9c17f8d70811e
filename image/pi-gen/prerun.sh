#!/bin/bash -e
# pi-gen stage prologue: start from the previous stage's root when this stage
# runs on its own (the usual pi-gen convention).
if [ ! -d "${ROOTFS_DIR}" ]; then
	copy_previous
fi

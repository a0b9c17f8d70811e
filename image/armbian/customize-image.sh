#!/bin/bash
# Armbian userpatches/customize-image.sh: bakes lmntd into the image (BTT CB1
# and other Armbian boards). Armbian runs this inside the image's chroot as
#   /tmp/customize-image.sh RELEASE LINUXFAMILY BOARD BUILD_DESKTOP
# with userpatches/overlay bind-mounted read-only at /tmp/overlay.
# If you already have a customize-image.sh, add the `bash ...install-in-root.sh`
# line below to it.
set -euo pipefail

RELEASE=${1:?Armbian passes RELEASE LINUXFAMILY BOARD BUILD_DESKTOP}
LINUXFAMILY=${2:-}
BOARD=${3:-}
BUILD_DESKTOP=${4:-no}

echo "lmntd: customizing ${BOARD:-an unknown board} (${LINUXFAMILY:-?}, ${RELEASE}, desktop: ${BUILD_DESKTOP})"
case $RELEASE in
bullseye | bookworm | trixie | jammy | noble) ;;
*) echo "lmntd: warning: release '$RELEASE' is untested; lmntd needs systemd 247 or later" >&2 ;;
esac

bash /tmp/overlay/lmntd-image/install-in-root.sh /tmp/overlay/lmntd-image </dev/null

#!/bin/bash -e
# pi-gen sub-stage, chroot side (pi-gen feeds this file to on_chroot on
# stdin, so the installer gets /dev/null as its stdin). LMNTD_* variables
# exported in pi-gen's config override the bundle's settings.
bash /var/tmp/lmntd-image/install-in-root.sh /var/tmp/lmntd-image </dev/null
rm -rf /var/tmp/lmntd-image

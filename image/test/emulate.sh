#!/usr/bin/env bash
# Runs an assembled lmntd drop-in against a root filesystem the way each
# image builder does, without the builder itself (its image handling,
# partitions and downloads are not what we test; its calling convention is).
#
#   emulate.sh pi-gen     ROOT STAGE_DIR
#   emulate.sh custopizer ROOT SCRIPTS_DIR
#   emulate.sh armbian    ROOT USERPATCHES_DIR RELEASE LINUXFAMILY BOARD BUILD_DESKTOP
#
# Everything runs in a private mount namespace, so the builders' bind mounts
# vanish with this process even when a step fails.
set -euo pipefail

if [[ -z ${LMNTD_EMULATE_UNSHARED:-} ]]; then
  exec env LMNTD_EMULATE_UNSHARED=1 unshare --mount --propagation private -- "$0" "$@"
fi

builder=${1:?usage: emulate.sh pi-gen|custopizer|armbian ROOT DIR [ARGS]}
root=$(realpath "${2:?no ROOT}")
dir=$(realpath "${3:?no drop-in directory}")
shift 3

case $builder in
pi-gen)
  # build.sh's run_stage/run_sub_stage and scripts/common's on_chroot: the
  # stage runs from its directory with ROOTFS_DIR exported; NN-run.sh on the
  # host, NN-run-chroot.sh fed to a capsh chroot on stdin.
  export ROOTFS_DIR=$root STAGE_DIR=$dir STAGE=$(basename "$dir") PREV_ROOTFS_DIR=$root
  on_chroot() {
    mountpoint -q "$ROOTFS_DIR/proc" || mount -t proc proc "$ROOTFS_DIR/proc"
    mountpoint -q "$ROOTFS_DIR/dev" || mount --bind /dev "$ROOTFS_DIR/dev"
    mountpoint -q "$ROOTFS_DIR/dev/pts" || mount --bind /dev/pts "$ROOTFS_DIR/dev/pts"
    mountpoint -q "$ROOTFS_DIR/sys" || mount --bind /sys "$ROOTFS_DIR/sys"
    capsh --drop=cap_setfcap "--chroot=${ROOTFS_DIR}/" -- -e "$@"
  }
  copy_previous() { echo "emulate: copy_previous called but the root already exists" >&2; return 1; }
  export -f on_chroot copy_previous
  cd "$dir"
  [[ ! -x prerun.sh ]] || ./prerun.sh
  for sub in "$dir"/*/; do
    [[ ! -f $sub/SKIP ]] || continue
    pushd "$sub" >/dev/null
    for i in {00..99}; do
      if [[ -x $i-run.sh ]]; then
        echo "emulate: pi-gen ${sub#"$dir"/}$i-run.sh"
        "./$i-run.sh"
      fi
      if [[ -f $i-run-chroot.sh ]]; then
        echo "emulate: pi-gen ${sub#"$dir"/}$i-run-chroot.sh"
        on_chroot <"$i-run-chroot.sh"
      fi
    done
    popd >/dev/null
  done
  ;;
custopizer)
  # src/customize: files/ copied into the root, then every script copied to
  # /chroot_script and run with /bin/bash inside the chroot (no /proc by
  # default: EDITBASE_MOUNT_PROC=0; /dev and /dev/pts bound), then files/
  # removed.
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  cd "$root"
  [[ ! -d $dir/files ]] || cp -r --preserve=mode,timestamps "$dir/files" .
  while IFS= read -r script; do
    echo "emulate: custopizer $(basename "$script")"
    cp "$script" chroot_script
    chmod 755 chroot_script
    chroot . /bin/bash /chroot_script
    rm chroot_script
  done < <(find "$dir" -maxdepth 1 -not -type d -not -path '*/.*' -not -path '*.disabled' | sort)
  rm -rf files
  ;;
armbian)
  # lib/functions/main/rootfs-image.sh customize_image: the script copied to
  # /tmp, userpatches/overlay bound read-only at /tmp/overlay, run in the
  # chroot (proc, sys, dev mounted) with RELEASE LINUXFAMILY BOARD
  # BUILD_DESKTOP.
  [[ $# -eq 4 ]] || { echo "emulate: armbian needs RELEASE LINUXFAMILY BOARD BUILD_DESKTOP" >&2; exit 2; }
  mount -t proc proc "$root/proc"
  mount --bind /sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  install -m 0755 "$dir/customize-image.sh" "$root/tmp/customize-image.sh"
  mkdir -p "$root/tmp/overlay"
  mount --bind "$dir/overlay" "$root/tmp/overlay"
  mount -o remount,bind,ro "$root/tmp/overlay"
  echo "emulate: armbian customize-image.sh $*"
  chroot "$root" /bin/bash -c "/tmp/customize-image.sh $(printf '%q ' "$@")"
  umount "$root/tmp/overlay"
  rmdir "$root/tmp/overlay"
  rm -f "$root/tmp/customize-image.sh"
  ;;
*)
  echo "emulate: unknown builder '$builder'" >&2
  exit 2
  ;;
esac
echo "emulate: $builder finished"

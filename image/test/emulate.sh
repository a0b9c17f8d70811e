#!/usr/bin/env bash
# Runs an assembled lmntd drop-in against a root filesystem the way each
# image builder does, without the builder itself (its image handling,
# partitions and downloads are not what we test; its calling convention and
# the mounts it puts over the root are). Read from the builders' sources:
#   pi-gen      build.sh run_stage/run_sub_stage, scripts/common on_chroot
#   CustoPiZer  src/customize, src/chroot.sh, src/start_chroot_script
#   Armbian     lib/functions/rootfs/customize.sh customize_image,
#               lib/functions/general/chroot-helpers.sh mount_chroot,
#               lib/functions/host/prepare-host.sh (the template copy)
#
#   emulate.sh pi-gen     ROOT STAGE_DIR [STAGE_DIR...]   (a STAGE_LIST)
#   emulate.sh custopizer ROOT SCRIPTS_DIR
#   emulate.sh armbian    ROOT USERPATCHES_DIR RELEASE LINUXFAMILY BOARD BUILD_DESKTOP ARCH
#
# Everything runs in a private mount namespace, so the builders' mounts
# vanish with this process even when a step fails.
set -euo pipefail

if [[ -z ${LMNTD_EMULATE_UNSHARED:-} ]]; then
  exec env LMNTD_EMULATE_UNSHARED=1 unshare --mount --propagation private -- "$0" "$@"
fi

builder=${1:?usage: emulate.sh pi-gen|custopizer|armbian ROOT DIR [ARGS]}
root=$(realpath "${2:?no ROOT}")
dir=$(realpath "${3:?no drop-in directory}")
shift 3

# unmount_under DIR: what pi-gen's unmount and Armbian's umount_chroot do,
# every mount at or below DIR, deepest first.
unmount_under() {
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r | xargs -r umount
}

case $builder in
pi-gen)
  # build.sh: for each stage of STAGE_LIST, unmount, prerun.sh, then every
  # sub-stage directory in order: NN-run.sh on the host from the sub-stage
  # directory, NN-run-chroot.sh fed to on_chroot on stdin; unmount again.
  # on_chroot mounts proc, dev, dev/pts, sys and FRESH tmpfs on /run and
  # /tmp over the root (each only if not mounted yet), so whatever a host
  # script put into ${ROOTFS_DIR}/tmp or /run is hidden from the chroot.
  # Stages whose directory holds EXPORT_IMAGE (and no SKIP_IMAGES) are the
  # ones exported to an image: printed as "emulate: pi-gen exports STAGE".
  # All stages share ROOT here (pi-gen's copy_previous rsyncs the previous
  # stage's root; the copy itself is not what we test).
  export ROOTFS_DIR=$root PREV_ROOTFS_DIR=$root
  on_chroot() {
    local m
    for m in proc dev dev/pts sys run tmp; do
      mountpoint -q "$ROOTFS_DIR/$m" && continue
      case $m in
      proc) mount -t proc proc "$ROOTFS_DIR/proc" ;;
      run | tmp) mount -t tmpfs tmpfs "$ROOTFS_DIR/$m" ;;
      *) mount --bind "/$m" "$ROOTFS_DIR/$m" ;;
      esac
    done
    # pi-gen's master (armhf) runs this under `setarch linux32`; its arm64
    # branch does not. The test roots are arm64.
    capsh --drop=cap_setfcap "--chroot=${ROOTFS_DIR}/" -- -e "$@"
  }
  copy_previous() { echo "emulate: copy_previous called but the root already exists" >&2; return 1; }
  export -f on_chroot copy_previous
  exports=()
  for stage_dir in "$dir" "$@"; do
    stage_dir=$(realpath "$stage_dir")
    export STAGE_DIR=$stage_dir STAGE=$(basename "$stage_dir")
    unmount_under "$root"
    if [[ ! -f $stage_dir/SKIP_IMAGES && -f $stage_dir/EXPORT_IMAGE ]]; then
      exports+=("$STAGE")
    fi
    if [[ ! -f $stage_dir/SKIP ]]; then
      cd "$stage_dir"
      [[ ! -x prerun.sh ]] || ./prerun.sh
      for sub in "$stage_dir"/*; do
        [[ -d $sub && ! -f $sub/SKIP ]] || continue
        pushd "$sub" >/dev/null
        for i in {00..99}; do
          if [[ -x $i-run.sh ]]; then
            echo "emulate: pi-gen $STAGE/${sub##*/}/$i-run.sh"
            "./$i-run.sh"
          fi
          if [[ -f $i-run-chroot.sh ]]; then
            echo "emulate: pi-gen $STAGE/${sub##*/}/$i-run-chroot.sh"
            on_chroot <"$i-run-chroot.sh"
          fi
        done
        popd >/dev/null
      done
    fi
    unmount_under "$root"
  done
  for s in "${exports[@]}"; do echo "emulate: pi-gen exports $s"; done
  ;;
custopizer)
  # src/customize: the image's root mounted with /dev and /dev/pts bound
  # (no /proc: EDITBASE_MOUNT_PROC=0 by default), start_chroot_script (it
  # installs a policy-rc.d that keeps services from starting), files/ copied
  # into the root, every script copied to /chroot_script and run with
  # /bin/bash inside the chroot, files/ removed, end_chroot_script.
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  cd "$root"
  printf 'exit 101\n' >usr/sbin/policy-rc.d
  chmod +x usr/sbin/policy-rc.d
  [[ ! -d $dir/files ]] || cp -r --preserve=mode,timestamps "$dir/files" .
  while IFS= read -r script; do
    echo "emulate: custopizer $(basename "$script")"
    cp "$script" chroot_script
    chmod 755 chroot_script
    chroot . /bin/bash /chroot_script
    rm chroot_script
  done < <(find "$dir" -maxdepth 1 -not -type d -not -path '*/\.*' -not -path '*/*\.disabled' | sort)
  rm -rf files
  rm -f usr/sbin/policy-rc.d
  ;;
armbian)
  # prepare-host.sh copies Armbian's template customize-image.sh into
  # userpatches when there is none, on every build. customize_image then
  # runs in the root mount_chroot prepared (tmpfs on /tmp, /var/tmp and
  # /run/user/0; proc, sys, dev, dev/pts): the script copied to /tmp,
  # userpatches/overlay bound read-only at /tmp/overlay, run as
  # `bash -e -o pipefail -c "/tmp/customize-image.sh RELEASE LINUXFAMILY BOARD
  # BUILD_DESKTOP ARCH"` with a C locale and an empty TMPDIR.
  [[ $# -eq 5 ]] || { echo "emulate: armbian needs RELEASE LINUXFAMILY BOARD BUILD_DESKTOP ARCH" >&2; exit 2; }
  if [[ ! -f $dir/customize-image.sh ]]; then
    echo "emulate: armbian copies its template customize-image.sh into $dir"
    cp -p "$(dirname "$0")/armbian-customize-image.sh.template" "$dir/customize-image.sh"
  fi
  mkdir -p "$root/run/user/0"
  mount -t tmpfs -o size=99% tmpfs "$root/tmp"
  mount -t tmpfs -o size=99% tmpfs "$root/var/tmp"
  mount -t tmpfs -o size=99% tmpfs "$root/run/user/0"
  mount -t proc chproc "$root/proc"
  mount -t sysfs chsys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  cp "$dir/customize-image.sh" "$root/tmp/customize-image.sh"
  chmod +x "$root/tmp/customize-image.sh"
  mkdir -p "$root/tmp/overlay"
  [[ ! -d $dir/overlay ]] || mount -o bind,ro "$dir/overlay" "$root/tmp/overlay"
  echo "emulate: armbian customize-image.sh $*"
  TMPDIR="" LC_ALL=C LANG=C LANGUAGE="" SUDO_USER="" \
    chroot "$root" /usr/bin/env bash -e -o pipefail -c "/tmp/customize-image.sh $*"
  unmount_under "$root"
  ;;
*)
  echo "emulate: unknown builder '$builder'" >&2
  exit 2
  ;;
esac
echo "emulate: $builder finished"

#!/usr/bin/env bash
# Makes a Debian 12 root filesystem for the packaging and image tests.
#
#   scripts/rootfs.sh ARCH DIR     (ARCH: amd64 or arm64)
#
# The first run debootstraps (amd64 ≈ 1 min; arm64 ≈ 3 min through
# qemu-user) and caches a tarball under $LMNTD_TEST_CACHE (default
# /var/cache/lmntd-test); later runs unpack the cache in seconds. The mirror
# is the one this machine's apt uses, so the tests need no other network.
set -euo pipefail

arch=${1:?usage: rootfs.sh ARCH DIR}
dir=${2:?usage: rootfs.sh ARCH DIR}
cache=${LMNTD_TEST_CACHE:-/var/cache/lmntd-test}
# Packages the tests need inside the root: systemd as PID 1 for nspawn -b,
# apt's signature checks, setfacl for `lmnt setup`.
include=systemd,systemd-sysv,dbus,ca-certificates,gnupg,acl,procps,iproute2,util-linux
tarball="$cache/bookworm-$arch-v1.tar"

mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
      grep -v security | head -n1 | awk '{print $2}')
  [ -n "$m" ] || { echo "rootfs: no Debian mirror in this machine's apt sources" >&2; exit 1; }
  echo "$m"
}

enable_qemu() {
  local q=$1
  [ -d /proc/sys/fs/binfmt_misc ] || { echo "rootfs: no binfmt_misc support in this kernel" >&2; exit 1; }
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [ ! -e "/proc/sys/fs/binfmt_misc/$q" ]; then
    update-binfmts --enable "$q" >/dev/null 2>&1 || true
  fi
  [ -e "/proc/sys/fs/binfmt_misc/$q" ] || { echo "rootfs: could not register $q with binfmt_misc" >&2; exit 1; }
}

build() {
  local tmp
  tmp=$(mktemp -d "$cache/build-$arch.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  echo "rootfs: debootstrapping Debian 12 ($arch) into the cache; this happens once"
  case "$arch" in
    amd64)
      debootstrap --variant=minbase --include="$include" bookworm "$tmp" "$(mirror)" >"$tmp.log" 2>&1 ||
        { tail -20 "$tmp.log" >&2; exit 1; } ;;
    arm64)
      enable_qemu qemu-aarch64
      debootstrap --variant=minbase --foreign --arch=arm64 --include="$include" bookworm "$tmp" "$(mirror)" >"$tmp.log" 2>&1 ||
        { tail -20 "$tmp.log" >&2; exit 1; }
      cp /usr/bin/qemu-aarch64-static "$tmp/usr/bin/"
      chroot "$tmp" /debootstrap/debootstrap --second-stage >>"$tmp.log" 2>&1 ||
        { tail -20 "$tmp.log" >&2; exit 1; } ;;
    *) echo "rootfs: unsupported arch '$arch' (amd64, arm64)" >&2; exit 2 ;;
  esac
  rm -f "$tmp.log"
  chmod 0755 "$tmp"
  # The same apt mirror inside, so `apt-get install` in the root works too.
  echo "deb $(mirror) bookworm main" >"$tmp/etc/apt/sources.list"
  tar -C "$tmp" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
}

mkdir -p "$cache"
[ -f "$tarball" ] || build
rm -rf "$dir"
mkdir -p "$dir"
tar -C "$dir" -xf "$tarball"
# The root directory itself: the tarball records the build's mktemp mode
# (0700), which would lock every non-root user out of the whole system.
chmod 0755 "$dir"
[ "$arch" = amd64 ] || enable_qemu "qemu-$( [ "$arch" = arm64 ] && echo aarch64 )"
echo "rootfs: Debian 12 $arch root ready in $dir"

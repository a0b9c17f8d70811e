#!/usr/bin/env bash
# Makes the drop-in directory an image builder needs to bake lmntd into its
# image: the builder's glue plus a bundle (overlay, installer, settings, and
# the .debs or the apt repository's key). See image/README.md.
#
#   image/assemble.sh pi-gen|custopizer|armbian OUT [options]
#
#   pi-gen      OUT is a stage directory (add it to STAGE_LIST after the
#               stage it builds on; it exports the image: see image/README.md)
#   custopizer  OUT is CustoPiZer's scripts directory (workspace/scripts), or a
#               MainsailOS 2.x modules directory
#   armbian     OUT is Armbian's userpatches directory
#
# Options:
#   --deb FILE          a .deb to bake in (repeatable: one per architecture;
#                       the image's own architecture is picked at build time)
#   --apt-url URL       the lmntd apt repository (needs --keyring); with --deb
#                       it is only configured for later updates
#   --channel NAME      stable (default) or beta
#   --keyring FILE      the repository's public key (binary .gpg or armored .asc)
#   --config FILE       an lmntd.toml to ship instead of the package's default
#   --klipper-user USER Klipper's user (default: found at first boot)
#   --nginx auto|yes|no wire the MainsailOS/Fluidd nginx site (default auto)
#   --rpi-tpm           enable an SPI TPM module in config.txt (Raspberry Pi)
#   --no-firstboot      leave lmntd-firstboot.service disabled
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
fail() { echo "assemble: $*" >&2; exit 2; }

builder=${1:-}
out=${2:-}
case $builder in
pi-gen | custopizer | armbian) ;;
-h | --help) usage; exit 0 ;;
*) usage >&2; fail "the first argument must be pi-gen, custopizer or armbian, not '$builder'" ;;
esac
[[ -n $out ]] || fail "no output directory"
shift 2

debs=() apt_url= channel=stable keyring= config= klipper_user= nginx=auto rpi_tpm=0 firstboot=1
while [[ $# -gt 0 ]]; do
  case $1 in
  --deb) debs+=("${2:?--deb needs a file}"); shift 2 ;;
  --apt-url) apt_url=${2:?--apt-url needs a URL}; shift 2 ;;
  --channel) channel=${2:?--channel needs a name}; shift 2 ;;
  --keyring) keyring=${2:?--keyring needs a file}; shift 2 ;;
  --config) config=${2:?--config needs a file}; shift 2 ;;
  --klipper-user) klipper_user=${2:?--klipper-user needs a name}; shift 2 ;;
  --nginx) nginx=${2:?--nginx needs auto, yes or no}; shift 2 ;;
  --rpi-tpm) rpi_tpm=1; shift ;;
  --no-firstboot) firstboot=0; shift ;;
  *) fail "unknown option '$1' (see --help)" ;;
  esac
done

# Values end up in a shell-sourced settings file: accept only plain ones.
[[ -z $apt_url || $apt_url =~ ^https?://[A-Za-z0-9._~:/?#@!$\&*+,\;=%-]+$ ]] || fail "--apt-url '$apt_url' is not an http(s) URL"
[[ $channel == stable || $channel == beta ]] || fail "--channel must be stable or beta, not '$channel'"
[[ -z $klipper_user || $klipper_user =~ ^[a-z_][a-z0-9_-]*$ ]] || fail "--klipper-user '$klipper_user' is not a user name"
[[ $nginx == auto || $nginx == yes || $nginx == no ]] || fail "--nginx must be auto, yes or no, not '$nginx'"
[[ ${#debs[@]} -gt 0 || -n $apt_url ]] || fail "give --deb FILE or --apt-url URL (or both)"
[[ -z $apt_url || -n $keyring ]] || fail "--apt-url needs --keyring: apt refuses an unsigned source"
for deb in "${debs[@]}"; do
  [[ $(dpkg-deb --field "$deb" Package 2>/dev/null) == lmntd ]] || fail "$deb is not an lmntd .deb"
done
[[ -z $keyring || -s $keyring ]] || fail "keyring $keyring is missing or empty"
[[ -z $config || -f $config ]] || fail "config $config does not exist"

make_bundle() {
  local b=$1
  rm -rf "$b"
  mkdir -p "$b/debs"
  cp -R --preserve=mode,links "$here/overlay" "$b/overlay"
  install -m 0755 "$here/install-in-root.sh" "$b/install-in-root.sh"
  for deb in "${debs[@]}"; do install -m 0644 "$deb" "$b/debs/"; done
  if [[ -n $keyring ]]; then
    if [[ $(head -c 5 "$keyring") == ----- ]]; then
      install -m 0644 "$keyring" "$b/keyring.asc"
    else
      install -m 0644 "$keyring" "$b/keyring.gpg"
    fi
  fi
  [[ -z $config ]] || install -m 0644 "$config" "$b/lmntd.toml"
  cat >"$b/settings" <<SETTINGS
# lmntd image settings, written by image/assemble.sh. A variable set in the
# build's environment wins over the value here.
LMNTD_APT_URL=\${LMNTD_APT_URL-$apt_url}
LMNTD_APT_CHANNEL=\${LMNTD_APT_CHANNEL-$channel}
LMNTD_KLIPPER_USER=\${LMNTD_KLIPPER_USER-$klipper_user}
LMNTD_NGINX=\${LMNTD_NGINX-$nginx}
LMNTD_RPI_TPM=\${LMNTD_RPI_TPM-$rpi_tpm}
LMNTD_FIRSTBOOT=\${LMNTD_FIRSTBOOT-$firstboot}
SETTINGS
}

# armbian_template FILE: FILE is Armbian's customize-image.sh template as
# copied, with nothing added: the template's header, and no command between
# "Main() {" and "} # Main" but the case skeleton and comments.
armbian_template() {
  grep -q '^# This is the image customization script$' "$1" || return 1
  grep -q '^Main "\$@"$' "$1" || return 1
  awk '/^Main\(\) \{/ { inside = 1; next }
       /^\} # Main/ { inside = 0 }
       inside && !/^[[:space:]]*(#.*|case .* in|esac|[^[:space:]()]+\)|;;|)$/ { code = 1 }
       END { exit code }' "$1"
}

mkdir -p "$out"
case $builder in
pi-gen)
  install -m 0755 "$here/pi-gen/prerun.sh" "$out/prerun.sh"
  mkdir -p "$out/00-lmntd/files"
  install -m 0755 "$here/pi-gen/00-lmntd/00-run.sh" "$out/00-lmntd/00-run.sh"
  install -m 0644 "$here/pi-gen/00-lmntd/01-run-chroot.sh" "$out/00-lmntd/01-run-chroot.sh"
  install -m 0644 "$here/pi-gen/EXPORT_IMAGE" "$out/EXPORT_IMAGE"
  make_bundle "$out/00-lmntd/files/lmntd-image"
  ;;
custopizer)
  install -m 0755 "$here/custopizer/60-lmntd" "$out/60-lmntd"
  make_bundle "$out/files/lmntd-image"
  ;;
armbian)
  # Armbian copies its template customize-image.sh into userpatches on every
  # build that finds none, so a tree built once has one: an untouched
  # template (its Main's cases hold only comments) does nothing and is
  # replaced; a script with the owner's code is left alone.
  if [[ -f $out/customize-image.sh ]] && ! grep -q 'lmntd-image/install-in-root.sh' "$out/customize-image.sh" &&
    ! armbian_template "$out/customize-image.sh"; then
    fail "$out/customize-image.sh exists and has your own code: add the lmntd line from image/armbian/customize-image.sh to it instead"
  fi
  install -m 0755 "$here/armbian/customize-image.sh" "$out/customize-image.sh"
  make_bundle "$out/overlay/lmntd-image"
  ;;
esac
echo "assemble: $builder drop-in ready in $out"

#!/bin/bash
# Bakes lmntd into the root filesystem this runs in: the package, the image
# overlay, the apt source, and the units enabled by preset. The pi-gen,
# CustoPiZer and Armbian glue run it inside the image's chroot; it needs no
# running systemd and is idempotent (run it twice, get the same root).
#
#   install-in-root.sh BUNDLE_DIR
#
# BUNDLE_DIR is what image/assemble.sh made: settings, overlay/, and
# optionally debs/*.deb, keyring.gpg or keyring.asc, lmntd.toml.
# Every LMNTD_* setting can also come from the environment, which wins.
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

bundle=${1:?usage: install-in-root.sh BUNDLE_DIR}
say() { echo "lmntd-image: $*"; }
fail() { echo "lmntd-image: error: $*" >&2; exit 1; }

[[ -f $bundle/settings && -d $bundle/overlay ]] || fail "$bundle is not an lmntd image bundle (no settings or overlay/); make one with image/assemble.sh"
# shellcheck source=/dev/null
. "$bundle/settings"

readonly keyring_base=/usr/share/keyrings/lmntd-archive-keyring
readonly sources=/etc/apt/sources.list.d/lmntd.sources
readonly nginx_include='include /usr/share/lmntd/nginx/lmntd.conf;'
readonly units=(lmntd.socket lmntd-klipper.socket lmntd.service lmntd-firstboot.service lmntd-http.socket lmntd-proxy.socket)

arch=$(dpkg --print-architecture)

# --- apt source and keyring ------------------------------------------------
# The key is stored as the builder gave it: apt reads binary (.gpg) and
# armored (.asc) keyrings in signed-by, so the image needs no gpg.
install_keyring() {
  local src ext
  for ext in gpg asc; do
    [[ -f $bundle/keyring.$ext ]] && src=$bundle/keyring.$ext && break
  done
  [[ -n ${src:-} ]] || return 1
  rm -f "$keyring_base.gpg" "$keyring_base.asc"
  install -D -m 0644 "$src" "$keyring_base.$ext"
  echo "$keyring_base.$ext"
}

keyring=
if keyring=$(install_keyring); then
  say "installed the lmntd archive key as $keyring"
fi
if [[ -n $LMNTD_APT_URL ]]; then
  [[ -n $keyring ]] || fail "LMNTD_APT_URL is set but the bundle has no keyring: an unsigned source would break 'apt update' (assemble with --keyring)"
  case $LMNTD_APT_CHANNEL in stable | beta) ;; *) fail "LMNTD_APT_CHANNEL must be stable or beta, not '$LMNTD_APT_CHANNEL'" ;; esac
  cat >"$sources.tmp" <<SOURCES
# lmntd, the LMNT Marketplace printer agent. Channel: stable or beta.
Types: deb
URIs: $LMNTD_APT_URL
Suites: $LMNTD_APT_CHANNEL
Components: main
Signed-By: $keyring
SOURCES
  mv -f "$sources.tmp" "$sources"
  say "apt source $LMNTD_APT_URL ($LMNTD_APT_CHANNEL) in $sources"
else
  rm -f "$sources"
  say "warning: no LMNTD_APT_URL: this image will not get lmntd updates through apt"
fi

# --- the package -----------------------------------------------------------
# A .deb from the bundle for this root's architecture wins over the
# repository, so a build can pin exactly what it tested.
find_deb() {
  local deb found=()
  shopt -s nullglob
  for deb in "$bundle"/debs/*.deb; do
    [[ $(dpkg-deb --field "$deb" Package) == lmntd ]] || continue
    [[ $(dpkg-deb --field "$deb" Architecture) == "$arch" ]] && found+=("$deb")
  done
  shopt -u nullglob
  [[ ${#found[@]} -le 1 ]] || fail "several lmntd .debs for $arch in the bundle: ${found[*]}"
  [[ ${#found[@]} -eq 0 ]] || echo "${found[0]}"
}

deb=$(find_deb)
if [[ -n $deb ]]; then
  say "installing $(basename "$deb")"
  # apt (not dpkg -i) so missing dependencies come from the image's sources.
  apt-get install -y -q "$(realpath "$deb")" </dev/null
elif [[ -n $LMNTD_APT_URL ]]; then
  say "installing lmntd from $LMNTD_APT_URL"
  # Refresh only our source: the builder's distribution lists stay as they are.
  apt-get update -q -o Dir::Etc::SourceList="$sources" -o Dir::Etc::SourceParts=- \
    -o APT::Get::List-Cleanup=0 </dev/null
  apt-get install -y -q lmntd </dev/null
else
  fail "nothing to install: no lmntd .deb for $arch in $bundle/debs and no LMNTD_APT_URL"
fi
dpkg-query -W -f='${Status}' lmntd | grep -q 'install ok installed' || fail "lmntd is not installed after apt-get"
say "lmntd $(dpkg-query -W -f='${Version}' lmntd) installed"

# --- the overlay -----------------------------------------------------------
# Merged into /, owned by root; modes come from the bundle.
cp -R --no-preserve=ownership --preserve=mode,links "$bundle/overlay/." /
# The image's settings go into a drop-in lmntd reads after lmntd.toml, never
# into lmntd.toml itself: that is a dpkg conffile, and an edited conffile
# makes every later upgrade that ships a new one stop at dpkg's prompt
# (unattended upgrades fail there).
readonly image_config=/etc/lmntd/lmntd.toml.d/10-image.toml
if [[ -f $bundle/lmntd.toml ]]; then
  install -d -m 0755 "${image_config%/*}"
  install -m 0644 "$bundle/lmntd.toml" "$image_config"
  say "installed the image's settings as $image_config"
else
  rm -f "$image_config"
fi
if [[ -n $LMNTD_KLIPPER_USER ]]; then
  [[ $LMNTD_KLIPPER_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || fail "LMNTD_KLIPPER_USER '$LMNTD_KLIPPER_USER' is not a user name"
  sed -i "s/^KLIPPER_USER=.*/KLIPPER_USER=$LMNTD_KLIPPER_USER/" /etc/default/lmntd-firstboot
fi

# --- nginx (MainsailOS / FluiddPi) ------------------------------------------
# The package's snippet is included inside the web UI's server block, and the
# web server's proxy socket it talks to (lmntd-proxy.socket) is enabled.
nginx_wired=
if [[ $LMNTD_NGINX != no ]]; then
  for site in /etc/nginx/sites-available/mainsail /etc/nginx/sites-available/fluidd; do
    [[ -f $site ]] || continue
    if ! grep -qF "$nginx_include" "$site"; then
      grep -qE '^[[:space:]]*server[[:space:]]*\{' "$site" || fail "$site has no 'server {' line to include the lmntd routes in"
      sed -i -E "0,/^[[:space:]]*server[[:space:]]*\{/s||&\n    # LMNT Marketplace printer agent (lmntd)\n    $nginx_include|" "$site"
    fi
    say "nginx: $site includes the lmntd routes"
    nginx_wired=1
  done
  [[ $LMNTD_NGINX != yes || -n $nginx_wired ]] || fail "LMNTD_NGINX=yes but no /etc/nginx/sites-available/mainsail or fluidd"
fi
install -d -m 0755 /etc/systemd/system-preset
if [[ -n $nginx_wired ]]; then
  echo 'enable lmntd-proxy.socket' >/etc/systemd/system-preset/40-lmntd-nginx.preset
else
  rm -f /etc/systemd/system-preset/40-lmntd-nginx.preset
fi

# --- SPI TPM on Raspberry Pi (opt-in) ----------------------------------------
if [[ $LMNTD_RPI_TPM == 1 ]]; then
  config_txt=
  for f in /boot/firmware/config.txt /boot/config.txt; do
    [[ -f $f ]] && config_txt=$f && break
  done
  [[ -n $config_txt ]] || fail "LMNTD_RPI_TPM=1 but there is no /boot/firmware/config.txt or /boot/config.txt (not a Raspberry Pi image?)"
  if ! grep -qx 'dtoverlay=tpm-slb9670' "$config_txt"; then
    { echo; cat /usr/share/lmntd/image/rpi-spi-tpm.txt; } >>"$config_txt"
  fi
  # tpm-udev makes /dev/tpmrm0 root:tss 0660; lmntd joins tss (as the
  # package's postinst does whenever the group exists).
  if ! getent group tss >/dev/null; then
    apt-get install -y -q tpm-udev </dev/null
  fi
  usermod -a -G tss lmntd
  say "SPI TPM overlay in $config_txt; lmntd is in group tss"
fi

# --- enable by preset ---------------------------------------------------------
# Offline: systemctl edits the symlinks in this root, no systemd needed.
if [[ $LMNTD_FIRSTBOOT == 0 ]]; then
  echo 'disable lmntd-firstboot.service' >/etc/systemd/system-preset/40-lmntd-firstboot.preset
else
  rm -f /etc/systemd/system-preset/40-lmntd-firstboot.preset
fi
systemctl preset "${units[@]}"
say "done: $(systemctl is-enabled "${units[@]}" | paste -sd' ') (${units[*]})"

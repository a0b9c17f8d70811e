#!/usr/bin/env bash
# Builds a signed apt repository from lmntd .deb files.
#
#   packaging/apt/make-repo.sh --out DIR --channel stable|beta --key KEYID [--gnupghome DIR] DEB...
#
# Layout: DIR/pool/<channel>/*.deb, DIR/dists/<channel>/main/binary-<arch>/Packages{,.gz},
# DIR/dists/<channel>/{Release,Release.gpg,InRelease}. Run it once per
# channel into the same DIR; other channels are kept. Printers use:
#   deb [signed-by=/usr/share/keyrings/lmntd-archive-keyring.gpg] URL <channel> main
set -euo pipefail

out= channel= key=
debs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --channel) channel=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --gnupghome) export GNUPGHOME=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "make-repo: unknown option $1" >&2; exit 2 ;;
    *) debs+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || { echo "make-repo: --out DIR is required" >&2; exit 2; }
case "$channel" in stable|beta) ;; *) echo "make-repo: --channel must be stable or beta, not '$channel'" >&2; exit 2 ;; esac
[ -n "$key" ] || { echo "make-repo: --key KEYID is required (the repository is always signed)" >&2; exit 2; }
[ ${#debs[@]} -gt 0 ] || { echo "make-repo: no .deb files given" >&2; exit 2; }
for cmd in apt-ftparchive gpg dpkg-deb; do
  command -v "$cmd" >/dev/null || { echo "make-repo: $cmd not found (apt-utils, gnupg, dpkg)" >&2; exit 2; }
done

pool="$out/pool/$channel"
dist="$out/dists/$channel"
mkdir -p "$pool"
rm -rf "$dist"
for deb in "${debs[@]}"; do
  dpkg-deb --field "$deb" Package >/dev/null || { echo "make-repo: $deb is not a .deb" >&2; exit 1; }
  cp -f "$deb" "$pool/"
done

archs=$(for deb in "$pool"/*.deb; do dpkg-deb --field "$deb" Architecture; done | grep -vx all | sort -u)
cd "$out"
# One index of the whole pool, split per architecture here: apt-ftparchive's
# own --arch filter drops armhf packages on an amd64 host.
all=$(apt-ftparchive packages "pool/$channel")
for arch in $archs; do
  dir="dists/$channel/main/binary-$arch"
  mkdir -p "$dir"
  printf '%s\n' "$all" | awk -v arch="$arch" 'BEGIN { RS = ""; ORS = "\n\n" }
    $0 ~ ("(^|\n)Architecture: (" arch "|all)(\n|$)")' >"$dir/Packages"
  gzip -9nkf "$dir/Packages"
  echo "make-repo: $channel/$arch: $(grep -c '^Package:' "$dir/Packages") package(s)"
done
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=LMNT \
  -o APT::FTPArchive::Release::Label=lmntd \
  -o APT::FTPArchive::Release::Suite="$channel" \
  -o APT::FTPArchive::Release::Codename="$channel" \
  -o APT::FTPArchive::Release::Components=main \
  -o APT::FTPArchive::Release::Architectures="$(echo $archs)" \
  release "dists/$channel" >"dists/$channel.Release.tmp"
# Written beside the directory first: a Release inside it while
# apt-ftparchive scans would list itself.
mv "dists/$channel.Release.tmp" "dists/$channel/Release"
gpg --batch --yes --local-user "$key" --armor --detach-sign -o "dists/$channel/Release.gpg" "dists/$channel/Release"
gpg --batch --yes --local-user "$key" --clearsign -o "dists/$channel/InRelease" "dists/$channel/Release"
echo "make-repo: signed dists/$channel with key $key"

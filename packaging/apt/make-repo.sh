#!/usr/bin/env bash
# Builds a signed apt repository from lmntd .deb files.
#
#   packaging/apt/make-repo.sh --out DIR --channel stable|beta --key KEYID [--gnupghome DIR] [--valid-days N] DEB...
#
# Layout: DIR/pool/<channel>/*.deb, DIR/dists/<channel>/main/binary-<arch>/Packages{,.gz}
# and by-hash/SHA256|SHA512/, DIR/dists/<channel>/{Release,Release.gpg,InRelease}.
# Run it once per channel into the same DIR (other channels are kept), also
# on the live repository: it publishes atomically for clients mid-update.
# The Release is valid for --valid-days (default 7): apt refuses it after
# that, so an attacker cannot replay an old one for long. Re-run it (with or
# without new .debs) before then, e.g. weekly from CI. Printers use:
#   deb [signed-by=/usr/share/keyrings/lmntd-archive-keyring.gpg] URL <channel> main
set -euo pipefail

out= channel= key= valid_days=7
debs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --channel) channel=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --gnupghome) export GNUPGHOME=$2; shift 2 ;;
    --valid-days) valid_days=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "make-repo: unknown option $1" >&2; exit 2 ;;
    *) debs+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || { echo "make-repo: --out DIR is required" >&2; exit 2; }
case "$channel" in stable|beta) ;; *) echo "make-repo: --channel must be stable or beta, not '$channel'" >&2; exit 2 ;; esac
[ -n "$key" ] || { echo "make-repo: --key KEYID is required (the repository is always signed)" >&2; exit 2; }
[[ $valid_days =~ ^[1-9][0-9]*$ ]] || { echo "make-repo: --valid-days must be a whole number of days, not '$valid_days'" >&2; exit 2; }
for cmd in apt-ftparchive gpg dpkg-deb; do
  command -v "$cmd" >/dev/null || { echo "make-repo: $cmd not found (apt-utils, gnupg, dpkg)" >&2; exit 2; }
done

pool="$out/pool/$channel"
mkdir -p "$pool" "$out/dists"
# Packages only ever join the pool (before any index names them), so a
# client holding an older index still finds what it lists.
for deb in "${debs[@]}"; do
  dpkg-deb --field "$deb" Package >/dev/null || { echo "make-repo: $deb is not a .deb" >&2; exit 1; }
  cp -f "$deb" "$pool/"
done

compgen -G "$pool/*.deb" >/dev/null || { echo "make-repo: no .deb files given and none in $pool" >&2; exit 2; }
archs=$(for deb in "$pool"/*.deb; do dpkg-deb --field "$deb" Architecture; done | grep -vx all | sort -u)
cd "$out"
# The new dists/<channel> is built beside the live one and published in an
# order that keeps every client consistent (see publish below).
stage=$(mktemp -d "dists/.$channel.new.XXXXXX")
trap "rm -rf '$PWD/$stage'" EXIT
# One index of the whole pool, split per architecture here: apt-ftparchive's
# own --arch filter drops armhf packages on an amd64 host.
all=$(apt-ftparchive packages "pool/$channel")
for arch in $archs; do
  dir="$stage/main/binary-$arch"
  mkdir -p "$dir"
  printf '%s\n' "$all" | awk -v arch="$arch" 'BEGIN { RS = ""; ORS = "\n\n" }
    $0 ~ ("(^|\n)Architecture: (" arch "|all)(\n|$)")' >"$dir/Packages"
  gzip -9nkf "$dir/Packages"
  # Acquire-By-Hash: apt fetches the indexes by their hash, so an index
  # replaced between its InRelease and its own download is never mixed up.
  for f in "$dir/Packages" "$dir/Packages.gz"; do
    for h in SHA256 SHA512; do
      sum=$(${h,,}sum "$f" | cut -d' ' -f1)
      install -D -m 0644 "$f" "$dir/by-hash/$h/$sum"
    done
  done
  echo "make-repo: $channel/$arch: $(grep -c '^Package:' "$dir/Packages") package(s)"
done
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=LMNT \
  -o APT::FTPArchive::Release::Label=lmntd \
  -o APT::FTPArchive::Release::Suite="$channel" \
  -o APT::FTPArchive::Release::Codename="$channel" \
  -o APT::FTPArchive::Release::Components=main \
  -o APT::FTPArchive::Release::Architectures="$(echo $archs)" \
  -o APT::FTPArchive::Release::Acquire-By-Hash=yes \
  -o APT::FTPArchive::Release::ValidTime=$((valid_days * 86400)) \
  release "$stage" >"$stage.Release"
# Written beside the directory first: a Release inside it while
# apt-ftparchive scans would list itself.
mv "$stage.Release" "$stage/Release"
gpg --batch --yes --local-user "$key" --armor --detach-sign -o "$stage/Release.gpg" "$stage/Release"
gpg --batch --yes --local-user "$key" --clearsign -o "$stage/InRelease" "$stage/Release"

# publish: a new channel is one rename. An existing one is updated so that a
# client mid-update always sees a consistent set: the by-hash files first
# (only added; those the previous Release named stay, for clients that
# fetched it just before), then the plain indexes, then Release and its
# detached signature, and InRelease last, each by an atomic rename.
live="dists/$channel"
if [[ ! -d $live ]]; then
  mv "$stage" "$live"
else
  keep=$(mktemp)
  for f in "$live/Release" "$stage/Release"; do
    [[ -f $f ]] && awk '/^(SHA256|SHA512):/ { h = $1; sub(":", "", h); next } /^[A-Za-z]/ { h = "" } h && NF == 3 { print $3 "/by-hash/" h "/" $1 }' "$f" |
      sed 's|/Packages\(\.gz\)\{0,1\}/by-hash/|/by-hash/|'
  done | sort -u >"$keep"
  (cd "$stage" && find main -path '*/by-hash/*' -type f) | while read -r f; do
    mkdir -p "$live/${f%/*}"
    [[ -f $live/$f ]] || { cp "$stage/$f" "$live/$f.tmp" && mv "$live/$f.tmp" "$live/$f"; }
  done
  (cd "$stage" && find main ! -path '*/by-hash/*' -type f) | while read -r f; do
    mkdir -p "$live/${f%/*}"
    mv -f "$stage/$f" "$live/$f"
  done
  for f in Release Release.gpg InRelease; do mv -f "$stage/$f" "$live/$f"; done
  # Hashes neither the new nor the previous Release names are gone for good.
  (cd "$live" && find main -path '*/by-hash/*' -type f) | while read -r f; do
    grep -qxF "$f" "$keep" || rm -f "$live/$f"
  done
  rm -f "$keep"
fi
echo "make-repo: signed dists/$channel with key $key, $(grep '^Valid-Until:' "$live/Release")"

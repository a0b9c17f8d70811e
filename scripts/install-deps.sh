#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine: the Debian
# packages that are missing (nothing is reinstalled) and, with --tools, the
# pinned Go release tools. Idempotent; safe to run before every `make test`.
set -euo pipefail

APT_PACKAGES=(
  openssl                                   # reference AES-CBC for make bench
  strace time                               # make bench: no-file check, peak RSS (GNU time)
  python3 python3-nacl python3-cryptography # Debian's interpreter: vectors, Klipper extras' tests
  python3-jinja2                            # renders the Klipper README's macros as Klipper does
  swtpm swtpm-tools tpm2-tools              # real TPM 2.0 for internal/seal
  acl util-linux iproute2                   # setfacl for lmnt setup, setpriv for a second uid
  nginx curl                                # the shipped nginx snippet in front of lmntd (test/system)
  systemd systemd-container                 # systemd-analyze, systemd-nspawn
  debootstrap qemu-user-static binfmt-support # Debian roots for packaging and image tests
  dpkg-dev apt-utils gnupg                  # signed apt repository
  chromium fonts-dejavu-core                # the status page's test drives Debian's headless Chromium
  lintian man-db                            # every .deb checked; man --warnings on the generated pages
)

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" = --tools ]; then
  gobin=$(go env GOPATH)/bin
  # Pinned: later goreleaser versions need a newer Go than the one we build
  # with. It embeds nfpm, which builds the .deb.
  if ! "$gobin/goreleaser" --version 2>/dev/null | grep -q 'GitVersion:.*v2\.15\.1$'; then
    echo "install-deps: building goreleaser v2.15.1 (about 8 minutes the first time)"
    go install github.com/goreleaser/goreleaser/v2@v2.15.1
  fi
  # The release's SBOMs (goreleaser.yaml sboms:).
  if ! "$gobin/cyclonedx-gomod" version 2>/dev/null | grep -q 'v1\.10\.0'; then
    echo "install-deps: building cyclonedx-gomod v1.10.0"
    go install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0
  fi
  # The release's third-party notices (scripts/release-files.sh). Built
  # inside a scratch module: `go install ...@v2.0.1` asks the module proxy
  # for the version list of go-licenses/v2 (for deprecation notices), which
  # it does not serve.
  if ! [ -x "$gobin/go-licenses" ] || ! go version -m "$gobin/go-licenses" | grep -q 'go-licenses/v2[[:space:]]*v2\.0\.1'; then
    echo "install-deps: building go-licenses v2.0.1"
    tools=$(mktemp -d)
    (cd "$tools" && go mod init lmntd-tools >/dev/null 2>&1 &&
      go get github.com/google/go-licenses/v2@v2.0.1 && go install github.com/google/go-licenses/v2)
    rm -rf "$tools"
  fi
fi

#!/usr/bin/env bash
# Makes the files a release ships besides the binaries, into build/release
# (goreleaser's before hook; reproducible: everything derives from the commit):
#   man/lmntd.8.gz, man/lmnt.1.gz, completion/lmnt, completion/lmntd
#                        from the programs' own --help (cmd/lmnt-docgen)
#   THIRD_PARTY_NOTICES(.gz)  every Go module linked into lmntd and lmnt, with its
#                        licence text, from go.mod by go-licenses, and Go's own
#   copyright            the .deb's machine-readable /usr/share/doc/lmntd/copyright
#   changelog.gz         the Debian changelog, from the release tags
#   source-date, source-date-epoch
#                        the commit's date (RFC 3339, Unix time): every timestamp
#                        of the release (goreleaser.yaml reads them)
#
#   scripts/release-files.sh VERSION
set -euo pipefail

version=${1:?usage: release-files.sh VERSION}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
commit_date=$(git -C "$here" log -1 --format=%cI HEAD)
out=$here/build/release
export PATH=$(go env GOPATH)/bin:$PATH LC_ALL=C TZ=UTC
# The files' own timestamps (gzip headers) come from the commit.
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(date -d "$commit_date" +%s)
command -v go-licenses >/dev/null || { echo "release-files: go-licenses is missing: run make tools" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out"
cd "$here"
date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ >"$out/source-date"
echo "$SOURCE_DATE_EPOCH" >"$out/source-date-epoch"

# --- man pages and completions ---------------------------------------------
go run ./cmd/lmnt-docgen --out "$out" --version "$version" --date "$(date -d "@$SOURCE_DATE_EPOCH" +%F)"
gzip -9n "$out/man/lmntd.8" "$out/man/lmnt.1"

# --- licences ----------------------------------------------------------------
# What the release binaries link (CGO_ENABLED=0, linux); lmntd's own packages
# are GPL-3.0-or-later (LICENSE) and left out of the third-party list.
report() {
  GOOS=linux CGO_ENABLED=0 go-licenses report --ignore github.com/lmnt-marketplace/lmntd \
    --template "$1" ./cmd/lmntd ./cmd/lmnt 2>"$out/go-licenses.log" ||
    { cat "$out/go-licenses.log" >&2; exit 1; }
}
goversion=$(go env GOVERSION)
{
  echo "lmntd ${version}: third-party notices"
  echo
  echo "The lmntd and lmnt programs are static Go binaries. Besides lmntd's own code"
  echo "(GPL-3.0-or-later, see LICENSE or /usr/share/common-licenses/GPL-3) they"
  echo "contain the Go standard library and runtime, and the Go modules below. Each"
  echo "one's licence and notices follow, as its module ships them."
  echo
  echo "================================================================================"
  echo "Go standard library and runtime ${goversion} — BSD-3-Clause"
  echo "================================================================================"
  echo
  cat "$(go env GOROOT)/LICENSE"
  report "$here/packaging/licenses/notices.tpl"
  # Apache-2.0 asks for the modules' NOTICE files too.
  GOOS=linux CGO_ENABLED=0 go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}}@{{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/lmntd ./cmd/lmnt |
    sort -u | while read -r mod dir; do
      for notice in "$dir"/NOTICE*; do
        [[ -f $notice ]] || continue
        printf '\n================================================================================\n'
        printf '%s — %s\n' "${mod/@/ }" "${notice##*/}"
        printf '================================================================================\n\n'
        cat "$notice"
      done
    done
} >"$out/THIRD_PARTY_NOTICES"
gzip -9nc "$out/THIRD_PARTY_NOTICES" >"$out/THIRD_PARTY_NOTICES.gz"
modules=$(report "$here/packaging/licenses/copyright-modules.tpl")
licenses=$(sed -n 's/^ .*: //p' <<<"$modules" | sort -u)
rm -f "$out/go-licenses.log"
! grep -qx Unknown <<<"$licenses" || { echo "release-files: go-licenses found a module of unknown licence:$modules" >&2; exit 1; }

# DEP-5 (copyright-format 1.0). The .deb's files are lmntd's; the two
# programs also carry the Go code above, under the licences listed.
{
  cat <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lmntd
Upstream-Contact: LMNT printer team <printers@lmnt.co>
Source: https://github.com/lmnt-marketplace/lmntd

Files: *
Copyright: 2026 LMNT
License: GPL-3+

Files: usr/bin/lmntd usr/bin/lmnt
Copyright: 2026 LMNT
 2009 The Go Authors
 the authors of the Go modules listed in the Comment
License: GPL-3+ and BSD-3-Clause$(sed '/^BSD-3-Clause$/d; s/^/ and /' <<<"$licenses" | tr -d '\n')
Comment: Static Go programs built with Go ${goversion}. They contain the Go
 standard library and runtime (BSD-3-Clause) and these Go modules:${modules}
 .
 Each module's licence text and notices are in
 /usr/share/doc/lmntd/THIRD_PARTY_NOTICES.gz.

License: GPL-3+
 This program is free software: you can redistribute it and/or modify it
 under the terms of the GNU General Public License as published by the Free
 Software Foundation, either version 3 of the License, or (at your option)
 any later version.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 3 can be found in /usr/share/common-licenses/GPL-3.
COPYRIGHT
  for l in $(printf '%s\n' BSD-3-Clause $licenses | sort -u); do
    case $l in
    Apache-2.0) note="On Debian systems, the complete text of the Apache License 2.0 can be found in /usr/share/common-licenses/Apache-2.0." ;;
    *) note="The complete text, with each holder's copyright line, is in /usr/share/doc/lmntd/THIRD_PARTY_NOTICES.gz." ;;
    esac
    printf '\nLicense: %s\n %s\n' "$l" "$note"
  done
} >"$out/copyright"

# --- Debian changelog from the tags ------------------------------------------
# One entry per release tag (v*), newest first, listing the commits since
# the tag before; the top entry is this version's (the commits since the
# last tag when this commit is not tagged). Lines fold at 80 columns.
entry() { # VERSION RANGE DATE
  echo "lmntd ($1) stable; urgency=medium"
  echo
  git log --no-merges --format='%s' "$2" | while IFS= read -r subject; do
    fold -s -w 74 <<<"$subject" | sed '1s/^/  * /; 2,$s/^/    /; s/ *$//'
  done
  echo
  echo " -- LMNT printer team <printers@lmnt.co>  $(date -d "$3" -R)"
  echo
}
mapfile -t tags < <(git tag --list 'v[0-9]*' --sort=-v:refname --merged HEAD)
{
  head=HEAD
  if [[ ${#tags[@]} -eq 0 ]]; then
    entry "$version" HEAD "$commit_date"
  else
    if [[ $(git rev-parse "${tags[0]}^{commit}") != $(git rev-parse HEAD) ]]; then
      entry "$version" "${tags[0]}..HEAD" "$commit_date"
    fi
    for i in "${!tags[@]}"; do
      range=${tags[$i]}
      [[ $((i + 1)) -ge ${#tags[@]} ]] || range=${tags[$((i + 1))]}..${tags[$i]}
      entry "${tags[$i]#v}" "$range" "$(git log -1 --format=%cI "${tags[$i]}")"
    done
  fi
} | sed '$d' | gzip -9n >"$out/changelog.gz"
echo "release-files: $(cd "$out" && find . -type f | sort | tr '\n' ' ')"

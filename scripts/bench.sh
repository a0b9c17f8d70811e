#!/usr/bin/env bash
# make bench: the job pipeline (ciphertext → AES-256-CBC → G-code gate +
# metadata → sealed memfd) against `openssl enc -d -aes-256-cbc` into a
# memfd, on the same input in the same run, runs alternating: real
# PrusaSlicer G-code with absolute extrusion (shared/bench, 101 MB; M82 is
# PrusaSlicer's and Cura's default) and with relative extrusion (the 30 MB
# fixture repeated), each at ~100 MB and ~400 MB to show that peak RSS stays
# flat; then end to end (job queued in the marketplace simulator → poll and
# download over loopback HTTPS → sealed memfd) against `curl | openssl enc -d`
# into a memfd on the same job. The inputs are encrypted in memfds: the
# measured runs write nothing to disk, which a second run under strace
# verifies (the end-to-end part keeps the printer's token file in a
# temporary directory, as the daemon keeps it in its state directory).
# See cmd/lmnt-pipebench for the method.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
export LMNTD_SHARED=${LMNTD_SHARED:-$(cd .. && pwd)/shared}

mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/lmnt-pipebench ./cmd/lmnt-pipebench

bin/lmnt-pipebench -sizes "${BENCH_SIZES:-100,400}" -runs "${BENCH_RUNS:-5}" -e2e -e2e-runs "${BENCH_E2E_RUNS:-9}"

# Verification: every open in the whole process tree (launcher, pipeline,
# GNU time, setpriv, openssl) is read-only, and no call creates, renames,
# links, truncates or removes a path. /dev/null is the only writable open
# allowed (os/exec gives unused stdio to it). The memfds are anonymous:
# memfd_create is not an open.
echo
echo "no-file check: strace -f over a 100 MB run of each input"
exec 3>&1
trace=$(strace -f -qq --seccomp-bpf -e signal=none \
  -e trace=open,openat,openat2,creat,truncate,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat,rmdir,mknod,mknodat \
  bin/lmnt-pipebench -sizes 100 -runs 1 2>&1 >/dev/null)
opens=$(grep -cE '\bopen(at2?)?\(' <<<"$trace" || true)
bad=$(grep -E '\bopen(at2?)?\(' <<<"$trace" | grep -E 'O_(WRONLY|RDWR|CREAT|TRUNC|APPEND)' | grep -v '"/dev/null"' || true)
bad+=$(grep -E '\b(creat|truncate|mkdir|mkdirat|rename|renameat2?|link|linkat|symlink|symlinkat|unlink|unlinkat|rmdir|mknod|mknodat)\(' <<<"$trace" || true)
if [ -n "$bad" ]; then
  echo "FAIL: the benchmark wrote to the file system:"
  echo "$bad"
  exit 1
fi
echo "ok: $opens opens, all read-only (or /dev/null); no path created, renamed, linked, truncated or removed"

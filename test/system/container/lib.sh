# What the container scripts (systest.sh, farm.sh) share; they source it
# from /systest/lib.sh after `set -euo pipefail`. Output goes to the
# console and /systest/out/log; on exit the status is left in
# /systest/out/rc and the container powers off (through PID 1: logind is
# masked).

# Every lmnt call is bounded: a daemon that never answers fails the step.
lmnt() { timeout 60 /usr/bin/lmnt "$@"; }
out=/systest/out
mkdir -p "$out"
exec > >(tee -a "$out/log") 2>&1
trap 'rc=$?; echo "$rc" >"$out/rc"; [ "$rc" = 0 ] && echo "== PASS" || echo "== FAIL (status $rc)"; systemctl start --no-block --job-mode=replace-irreversibly poweroff.target' EXIT

t0=${EPOCHREALTIME/./}
step() { local ms=$(((${EPOCHREALTIME/./} - t0) / 1000)); printf '== [%4d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

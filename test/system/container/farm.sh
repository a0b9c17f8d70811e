#!/bin/bash
# A farm host inside a booted Debian 12 container (systemd as PID 1): a
# one-printer install as today (lmntd.service, ~/printer_data), paired;
# then two more Klipper stand-ins as Klipper instances printer_1 and
# printer_2, each with its own lmntd@NAME from the template units, wired by
# hand as the README's farm section says. The Go harness (test/system/farm_test.go)
# installed lmntd, lmnt, the units, sysusers and tmpfiles files, the
# simulator and the stand-in, and /systest/cube.gcode.
set -euo pipefail
lmnt() { timeout 60 /usr/bin/lmnt "$@"; }
out=/systest/out
mkdir -p "$out"
exec > >(tee -a "$out/log") 2>&1
trap 'rc=$?; echo "$rc" >"$out/rc"; [ "$rc" = 0 ] && echo "== PASS" || echo "== FAIL (status $rc)"; systemctl start --no-block --job-mode=replace-irreversibly poweroff.target' EXIT
step() { echo "== $*"; }
fail() { echo "FAIL: $*"; exit 1; }
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}
field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }

step "the package's users and run-time directory"
systemd-sysusers
systemd-tmpfiles --create lmntd.conf
systemctl daemon-reload
useradd --create-home --shell /bin/bash pi
chmod 0700 /home/pi
usermod -aG lmnt pi

step "the marketplace simulator"
systemd-run --unit=marketsim --quiet /usr/local/bin/lmnt-marketsim serve --auto-approve --dir /srv/marketsim
wait_for 30 "the simulator's admin API" lmnt-marketsim state

step "a one-printer host as today: lmntd.service for ~/printer_data, paired"
install -d -o pi -g pi /home/pi/printer_data /home/pi/printer_data/config /home/pi/printer_data/gcodes
printf '[virtual_sdcard]\npath: /home/pi/printer_data/gcodes\n\n[encrypted_file_bridge]\n\n[secure_print]\n' |
    install -o pi -g pi -m 0644 /dev/stdin /home/pi/printer_data/config/printer.cfg
mkdir -p /etc/lmntd /etc/systemd/system/lmntd.service.d
cat >/etc/lmntd/lmntd.toml <<'TOML'
[marketplace]
url = "https://127.0.0.1:8443"
tls_ca_file = "/srv/marketsim/ca.pem"
[push]
base_url = "https://127.0.0.1:8445"
[klipper]
user = "pi"
[jobs]
auto_start = true
TOML
printf '[Service]\nBindReadOnlyPaths=/home/pi/printer_data/config\n' >/etc/systemd/system/lmntd.service.d/klipper.conf
setfacl -m u:lmntd:x /home/pi /home/pi/printer_data
setfacl -R -m u:lmntd:rX,d:u:lmntd:rX /home/pi/printer_data/config
systemctl daemon-reload
systemctl enable --now lmntd.socket lmntd-klipper.socket
systemd-run --unit=klipper --quiet -p User=pi -p Restart=always /usr/local/bin/lmnt-klipper-standin --auto-ready --log-level info
wait_for 30 "lmntd.service active" systemctl is-active lmntd.service
wait_for 30 "Klipper connected" sh -c "timeout 10 /usr/bin/lmnt status | grep -q 'klipper:     connected'"
timeout 90 /usr/bin/lmnt pair
id_default=$(lmnt status --json | field printer_id)
[ -n "$id_default" ] || fail "the one-printer host did not pair"
single_state=$(sha256sum /var/lib/lmntd/*.sealed /var/lib/lmntd/marketplace-token.json)

for n in printer_1 printer_2; do
    step "instance $n: Klipper's files, lmntd's config and drop-in, sockets, Klipper stand-in"
    install -d -o pi -g pi "/home/pi/${n}_data" "/home/pi/${n}_data/config" "/home/pi/${n}_data/gcodes"
    install -o pi -g pi -m 0644 /dev/stdin "/home/pi/${n}_data/config/printer.cfg" <<CFG
[virtual_sdcard]
path: /home/pi/${n}_data/gcodes

[encrypted_file_bridge]
socket_path: /run/lmntd/$n/klipper.sock

[secure_print]

[extruder]
nozzle_diameter: 0.4
CFG
    mkdir -p /etc/lmntd/instances "/etc/systemd/system/lmntd@$n.service.d"
    cat >"/etc/lmntd/instances/$n.toml" <<TOML
instance = "$n"
[marketplace]
url = "https://127.0.0.1:8443"
tls_ca_file = "/srv/marketsim/ca.pem"
[push]
base_url = "https://127.0.0.1:8445"
[klipper]
user = "pi"
[jobs]
auto_start = true
TOML
    printf '[Service]\nBindReadOnlyPaths=/home/pi/%s_data/config\n' "$n" >"/etc/systemd/system/lmntd@$n.service.d/klipper.conf"
    setfacl -m u:lmntd:x /home/pi "/home/pi/${n}_data"
    setfacl -R -m u:lmntd:rX,d:u:lmntd:rX "/home/pi/${n}_data/config"
    systemctl daemon-reload
    systemctl enable --now "lmntd@$n.socket" "lmntd-klipper@$n.socket"
    for s in api klipper; do
        perms=$(stat -c '%A %U %G' "/run/lmntd/$n/$s.sock")
        [ "$perms" = "srw-rw---- lmntd lmnt" ] || fail "/run/lmntd/$n/$s.sock is $perms"
    done
    systemd-run --unit="klipper-$n" --quiet -p User=pi -p Restart=always /usr/local/bin/lmnt-klipper-standin \
        --socket "/run/lmntd/$n/klipper.sock" --config-file "/home/pi/${n}_data/config/printer.cfg" --auto-ready --log-level info
    wait_for 30 "lmntd@$n active" systemctl is-active "lmntd@$n.service"
    wait_for 30 "Klipper of $n connected" sh -c "timeout 10 /usr/bin/lmnt --instance $n status | grep -q 'klipper:     connected'"
    [ "$(stat -c '%a %U' "/var/lib/lmntd/instances/$n")" = "700 lmntd" ] || fail "state of $n: $(stat -c '%a %U' "/var/lib/lmntd/instances/$n")"

    step "instance $n pairs"
    timeout 90 /usr/bin/lmnt --instance "$n" pair
    lmnt --instance "$n" status --json >"$out/status-$n.json"
    id=$(field printer_id <"$out/status-$n.json")
    key=$(field key_id <"$out/status-$n.json")
    [ -n "$id" ] && [ -n "$key" ] || fail "$n: no printer id or key id"
    eval "id_$n=$id key_$n=$key"
done
[ "$id_printer_1" != "$id_printer_2" ] || fail "both instances paired as $id_printer_1"
[ "$key_printer_1" != "$key_printer_2" ] || fail "both instances use key $key_printer_1"
ls -l /var/lib/lmntd/instances/*/

step "a package upgrade (postinst configure OLD) restarts every idle daemon, the farm's too"
units="lmntd.service lmntd@printer_1.service lmntd@printer_2.service"
before=$(for u in $units; do systemctl show -p InvocationID --value "$u"; done)
# As dpkg runs it (deb-systemd-helper insists on dpkg's environment).
DPKG_MAINTSCRIPT_PACKAGE=lmntd DPKG_MAINTSCRIPT_NAME=postinst /systest/postinst configure 0.0.1 | tee "$out/postinst.txt"
for n in printer_1 printer_2; do
    grep -q "lmntd@$n.service restarts as soon as no job is running" "$out/postinst.txt" || fail "postinst did not ask lmntd@$n to restart when idle"
done
i=1
for u in $units; do
    old=$(echo "$before" | sed -n "${i}p")
    wait_for 60 "$u restarted" sh -c "systemctl is-active $u && [ \"\$(systemctl show -p InvocationID --value $u)\" != $old ]"
    i=$((i + 1))
done
for n in printer_1 printer_2; do
    eval "id=\$id_$n"
    wait_for 30 "$n paired as $id after the restart" sh -c "timeout 10 /usr/bin/lmnt --instance $n status --json | grep -q '$id'"
done

step "lmnt status shows the default instance and both farm instances"
lmnt status | tee "$out/status-all.txt"
[ "$(grep -c '^instance ' "$out/status-all.txt")" = 3 ] || fail "lmnt status does not show three instances"
grep -q "^instance (default)" "$out/status-all.txt" || fail "the default instance is not shown"
[ "$(sha256sum /var/lib/lmntd/*.sealed /var/lib/lmntd/marketplace-token.json)" = "$single_state" ] ||
    fail "adding instances changed the one-printer install's key or token"
[ "$(stat -c '%a %U' /var/lib/lmntd)" = "700 lmntd" ] || fail "/var/lib/lmntd is $(stat -c '%a %U' /var/lib/lmntd)"
lmnt status --json | grep -q "\"printer_id\": \"$id_default\"" || fail "the default instance lost its pairing"

step "each printer prints its own job"
for n in printer_1 printer_2; do
    eval "id=\$id_$n"
    lmnt-marketsim create-job --printer "$id" /systest/cube.gcode >"$out/job-$n.json"
    eval "job_$n=$(field print_job_id <"$out/job-$n.json")"
done
for n in printer_1 printer_2; do
    eval "job=\$job_$n"
    [ -n "$job" ] || fail "no job id for $n"
    wait_for 120 "the success report of $job ($n)" sh -c "lmnt-marketsim status $job | grep -q '\"status\": \"success\"'"
    lmnt --instance "$n" jobs | grep -q "$job .*succeeded" || fail "$n: lmnt jobs does not list $job as succeeded"
done
step "a job for one printer never reaches the other's lmntd or Klipper"
lmnt --instance printer_2 jobs | grep -q "$job_printer_1" && fail "printer_2's lmntd knows printer_1's job"
lmnt --instance printer_1 jobs | grep -q "$job_printer_2" && fail "printer_1's lmntd knows printer_2's job"
journalctl -u klipper-printer_2 --no-pager -o cat | grep -q "$job_printer_1" && fail "printer_2's Klipper saw printer_1's job"
journalctl -u klipper-printer_1 --no-pager -o cat | grep -q "$job_printer_2" && fail "printer_1's Klipper saw printer_2's job"
journalctl -u klipper-printer_1 --no-pager -o cat | tail -n 3

step "removing printer_2 leaves printer_1 untouched"
key_sum=$(sha256sum /var/lib/lmntd/instances/printer_1/*.sealed)
systemctl disable --now lmntd@printer_2.service lmntd@printer_2.socket lmntd-klipper@printer_2.socket klipper-printer_2 2>/dev/null || true
rm -rf /var/lib/lmntd/instances/printer_2 /etc/lmntd/instances/printer_2.toml /etc/systemd/system/lmntd@printer_2.service.d /run/lmntd/printer_2
systemctl daemon-reload
[ "$(sha256sum /var/lib/lmntd/instances/printer_1/*.sealed)" = "$key_sum" ] || fail "printer_1's key changed"
[ "$(lmnt status | grep -c '^instance ')" = 2 ] || fail "lmnt status does not list the default instance and printer_1"
lmnt --instance printer_1 status | tee "$out/status-after.txt"
grep -q "$id_printer_1" "$out/status-after.txt" || fail "printer_1 is no longer paired as $id_printer_1"
lmnt-marketsim create-job --printer "$id_printer_1" /systest/cube.gcode >"$out/job-again.json"
again=$(field print_job_id <"$out/job-again.json")
wait_for 120 "the success report of $again" sh -c "lmnt-marketsim status $again | grep -q '\"status\": \"success\"'"
lmnt-marketsim create-job --printer "$id_default" /systest/cube.gcode >"$out/job-default.json"
jd=$(field print_job_id <"$out/job-default.json")
wait_for 120 "the success report of $jd (default instance)" sh -c "lmnt-marketsim status $jd | grep -q '\"status\": \"success\"'"
journalctl -u klipper --no-pager -o cat | grep -q "$jd" || fail "the default instance's Klipper did not print $jd"
for n in printer_1 printer_2; do
    journalctl -u "klipper-$n" --no-pager -o cat | grep -q "$jd" && fail "$n's Klipper saw the default instance's job"
done
step "all farm checks passed"

#!/bin/bash
# A farm host inside a booted Debian 12 container (systemd as PID 1): a
# one-printer install as today (lmntd.service, ~/printer_data), paired;
# then two more Klipper stand-ins as KIAUH-style Klipper instances printer_1
# and printer_2, each wired by `lmnt setup --instance printer_N` to its own
# lmntd@NAME from the template units. The Go harness (test/system/farm_test.go)
# installed lmntd, lmnt, the units, sysusers and tmpfiles files, the Klipper
# extras, the simulator and the stand-in, and /systest/cube.gcode.
set -euo pipefail
. /systest/lib.sh
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

step "the Klipper machine: user pi, one Klipper checkout, a \"python\" that runs the stand-in"
install -d -o pi -g pi /home/pi/klipper /home/pi/klipper/klippy /home/pi/klipper/klippy/extras /home/pi/klippy-env /home/pi/klippy-env/bin
echo '# klippy' | install -o pi -g pi -m 0644 /dev/stdin /home/pi/klipper/klippy/klippy.py
install -o pi -g pi -m 0755 /dev/stdin /home/pi/klippy-env/bin/python <<'SH'
#!/bin/sh
# $1 = klippy.py, $2 = printer.cfg. Like Klipper's extra, the stand-in
# connects to the socket_path printer.cfg names (lmntd's default without).
sock=$(sed -n 's/^socket_path: *//p' "$2")
exec /usr/local/bin/lmnt-klipper-standin --auto-ready --log-level info --config-file "$2" ${sock:+--socket "$sock"}
SH
# klipper_instance UNIT DATA-DIR: a Klipper instance as MainsailOS (klipper,
# printer_data) and KIAUH (klipper-printer_N, printer_N_data) install them.
klipper_instance() {
    local unit=$1 data=/home/pi/$2
    install -d -o pi -g pi "$data" "$data/config" "$data/gcodes" "$data/logs" "$data/systemd"
    install -o pi -g pi -m 0644 /dev/stdin "$data/config/printer.cfg" <<CFG
[virtual_sdcard]
path: $data/gcodes

[extruder]
nozzle_diameter: 0.4
CFG
    echo "KLIPPER_ARGS=\"/home/pi/klipper/klippy/klippy.py $data/config/printer.cfg -l $data/logs/klippy.log\"" |
        install -o pi -g pi -m 0644 /dev/stdin "$data/systemd/klipper.env"
    cat >"/etc/systemd/system/$unit.service" <<UNIT
[Unit]
Description=Klipper 3D Printer Firmware SV1 (lmnt-klipper-standin)
[Install]
WantedBy=multi-user.target
[Service]
Type=simple
User=pi
WorkingDirectory=/home/pi/klipper
EnvironmentFile=$data/systemd/klipper.env
ExecStart=/home/pi/klippy-env/bin/python \$KLIPPER_ARGS
Restart=always
RestartSec=1
UNIT
}
klipper_instance klipper printer_data
klipper_instance klipper-printer_1 printer_1_data
klipper_instance klipper-printer_2 printer_2_data
systemctl daemon-reload
marketsim_toml='[marketplace]
url = "https://127.0.0.1:8443"
tls_ca_file = "/srv/marketsim/ca.pem"
[push]
base_url = "https://127.0.0.1:8445"
[jobs]
auto_start = true'

step "a one-printer host as today: lmnt setup wires klipper.service (~/printer_data) to lmntd.service, paired"
mkdir -p /etc/lmntd
echo "$marketsim_toml" >/etc/lmntd/lmntd.toml
systemctl enable --now lmntd.socket lmntd-klipper.socket
lmnt setup --instance klipper
[ -f /etc/lmntd/setup.json ] || fail "lmnt setup wrote no manifest for the default lmntd"
systemctl start klipper.service
wait_for 30 "lmntd.service active" systemctl is-active lmntd.service
wait_for 30 "Klipper connected" sh -c "timeout 10 /usr/bin/lmnt status | grep -q 'klipper:     connected'"
timeout 90 /usr/bin/lmnt pair
id_default=$(lmnt status --json | field printer_id)
[ -n "$id_default" ] || fail "the one-printer host did not pair"
single_state=$(sha256sum /var/lib/lmntd/*.sealed /var/lib/lmntd/marketplace-token.json)
default_setup=$(sha256sum /etc/lmntd/setup.json /etc/lmntd/lmntd.toml.d/50-setup.toml /etc/systemd/system/lmntd.service.d/klipper.conf /home/pi/printer_data/config/printer.cfg)

for n in printer_1 printer_2; do
    step "instance $n: lmnt setup --instance $n wires it to its own lmntd@$n"
    mkdir -p "/etc/lmntd/instances/$n.toml.d"
    echo "$marketsim_toml" >"/etc/lmntd/instances/$n.toml.d/10-marketsim.toml"
    lmnt setup --instance "$n" | tee "$out/setup-$n.txt"
    grep -q "gets its own: lmntd@$n.service" "$out/setup-$n.txt" || fail "lmnt setup did not give $n its own lmntd"
    grep -q "^socket_path: /run/lmntd/$n/klipper.sock" "/home/pi/${n}_data/config/printer.cfg" || fail "$n's printer.cfg has no socket_path for lmntd@$n"
    grep -q "^instance = \"$n\"" "/etc/lmntd/instances/$n.toml" || fail "/etc/lmntd/instances/$n.toml does not name the instance"
    [ -f "/etc/lmntd/instances/$n.setup.json" ] || fail "no setup manifest for $n"
    systemctl is-enabled --quiet "lmntd@$n.socket" "lmntd-klipper@$n.socket" || fail "lmnt setup did not enable $n's sockets"
    for s in api klipper; do
        perms=$(stat -c '%A %U %G' "/run/lmntd/$n/$s.sock")
        [ "$perms" = "srw-rw---- lmntd lmnt" ] || fail "/run/lmntd/$n/$s.sock is $perms"
    done
    lmnt setup --instance "$n" | tee "$out/setup-again-$n.txt"
    grep -q 'nothing to change' "$out/setup-again-$n.txt" || fail "a second lmnt setup --instance $n changed something"
    systemctl start "klipper-$n.service"
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
[ "$(sha256sum /etc/lmntd/setup.json /etc/lmntd/lmntd.toml.d/50-setup.toml /etc/systemd/system/lmntd.service.d/klipper.conf /home/pi/printer_data/config/printer.cfg)" = "$default_setup" ] ||
    fail "setting up the farm instances changed the default instance's setup"
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
systemctl stop klipper-printer_2
lmnt setup --instance printer_2 --remove | tee "$out/remove-printer_2.txt"
systemctl is-active --quiet lmntd@printer_2.service && fail "lmntd@printer_2 still runs after its --remove"
systemctl is-enabled --quiet lmntd@printer_2.socket && fail "lmntd@printer_2.socket still enabled after its --remove"
for f in /etc/lmntd/instances/printer_2.toml /etc/lmntd/instances/printer_2.setup.json /etc/systemd/system/lmntd@printer_2.service.d; do
    [ -e "$f" ] && fail "$f is left after lmnt setup --instance printer_2 --remove"
done
grep -q "lmntd" /home/pi/printer_2_data/config/printer.cfg && fail "printer_2's printer.cfg still has the lmntd block"
[ -L /home/pi/klipper/klippy/extras/encrypted_file_bridge.py ] || fail "removing printer_2 took the extras the others use"
rm -rf /var/lib/lmntd/instances/printer_2
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
step "package removal: prerm remove takes every instance out of Klipper and stops it; purge deletes the rest"
DPKG_MAINTSCRIPT_PACKAGE=lmntd DPKG_MAINTSCRIPT_NAME=prerm /systest/prerm remove | tee "$out/prerm.txt"
for u in lmntd.service lmntd.socket lmntd-klipper.socket lmntd@printer_1.service lmntd@printer_1.socket lmntd-klipper@printer_1.socket; do
    systemctl is-active --quiet "$u" && fail "$u is still active after prerm remove"
done
for d in printer_data printer_1_data; do
    grep -q encrypted_file_bridge "/home/pi/$d/config/printer.cfg" && fail "prerm remove left the lmntd block in $d's printer.cfg"
done
[ -e /etc/lmntd/setup.json ] || [ -e /etc/lmntd/instances/printer_1.setup.json ] && fail "prerm remove left a setup manifest"
[ -e /home/pi/klipper/klippy/extras/encrypted_file_bridge.py ] && fail "prerm remove left the extras linked"
[ -e /run/lmntd/printer_1 ] && fail "prerm remove left /run/lmntd/printer_1"
DPKG_MAINTSCRIPT_PACKAGE=lmntd DPKG_MAINTSCRIPT_NAME=postrm /systest/postrm purge
for f in /etc/lmntd /var/lib/lmntd; do
    [ -e "$f" ] && fail "purge left $f"
done
ls /etc/systemd/system/*.wants/ | grep -q 'lmntd' && fail "purge left an enablement link of lmntd"
step "all farm checks passed"

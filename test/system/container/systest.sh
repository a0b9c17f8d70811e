#!/bin/bash
# The acceptance run inside a booted Debian 12 container (systemd as PID 1).
# systest.service starts it once multi-user.target is up; it leaves its exit
# status in /systest/out/rc and powers the container off (through PID 1:
# logind is masked). The Go harness
# (test/system/nspawn_test.go) prepared everything it uses:
#   /srv/apt                       the signed repository: stable = V1, beta = V2
#   /usr/share/keyrings/lmntd-archive-keyring.gpg   its public key
#   /usr/local/bin/lmnt-marketsim, lmnt-klipper-standin
#   /systest/cube.gcode            a real slicer fixture
#   /systest/env                   V1, V2 (the package versions)
set -euo pipefail
. /systest/env
. /systest/lib.sh

# The file list and /etc contents: what the package may create must be gone
# after the purge. Directories apt and systemd keep for themselves are left
# out, /run is checked on its own.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /systest \
        -o -path /var/log -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/lib/systemd \
        -o -path /var/tmp -o -path /srv \) -prune -o -printf '%p %m %u %g\n' | sort
    find /etc -xdev -type f ! -name '*-' ! -name .pwd.lock -exec sha256sum {} + | sort -k2
    getfacl -R -p -s /home /etc /var/lib 2>/dev/null
}

step "the Klipper machine: user pi (0700 home), a MainsailOS-style klipper.service running the Klipper stand-in"
useradd --create-home --shell /bin/bash pi
chmod 0700 /home/pi   # what Debian 12's adduser (DIR_MODE=0700) creates; useradd follows the umask
install -d -o pi -g pi /home/pi/printer_data/{config,gcodes,logs,comms,systemd} /home/pi/klipper/klippy/extras /home/pi/klippy-env/bin
install -o pi -g pi -m 0644 /dev/stdin /home/pi/printer_data/config/printer.cfg <<'CFG'
[include mainsail.cfg]

[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 3000

[stepper_x]
position_max: 235

[stepper_y]
position_max: 235

[stepper_z]
position_max: 250

[extruder]
nozzle_diameter: 0.400

#*# <---------------------- SAVE_CONFIG ---------------------->
#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.
#*#
#*# [bltouch]
#*# z_offset = 1.985
CFG
install -o pi -g pi -m 0644 /dev/stdin /home/pi/printer_data/config/mainsail.cfg <<'CFG'
[virtual_sdcard]
path: ~/printer_data/gcodes

[pause_resume]
CFG
printf 'klipper_mcu\nwebcamd\nKlipperScreen\ncrowsnest\n' | install -o pi -g pi -m 0644 /dev/stdin /home/pi/printer_data/moonraker.asvc
echo 'KLIPPER_ARGS="/home/pi/klipper/klippy/klippy.py /home/pi/printer_data/config/printer.cfg -l /home/pi/printer_data/logs/klippy.log"' |
    install -o pi -g pi -m 0644 /dev/stdin /home/pi/printer_data/systemd/klipper.env
echo '# klippy' | install -o pi -g pi -m 0644 /dev/stdin /home/pi/klipper/klippy/klippy.py
# The unit is MainsailOS's; its "python" runs the stand-in instead of klippy.py.
install -o pi -g pi -m 0755 /dev/stdin /home/pi/klippy-env/bin/python <<'SH'
#!/bin/sh
# $1 = klippy.py, $2 = printer.cfg
exec /usr/local/bin/lmnt-klipper-standin --auto-ready --log-level info --config-file "$2"
SH
cat >/etc/systemd/system/klipper.service <<'UNIT'
[Unit]
Description=Klipper 3D Printer Firmware SV1 (lmnt-klipper-standin)
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=simple
User=pi
RemainAfterExit=yes
WorkingDirectory=/home/pi/klipper
EnvironmentFile=/home/pi/printer_data/systemd/klipper.env
ExecStart=/home/pi/klippy-env/bin/python $KLIPPER_ARGS
Restart=always
RestartSec=1
UNIT
systemctl daemon-reload
systemctl start klipper.service
cfg_sum=$(sha256sum /home/pi/printer_data/config/printer.cfg)
# Only the lmntd repository: the test needs no network.
: >/etc/apt/sources.list
echo "deb [signed-by=/usr/share/keyrings/lmntd-archive-keyring.gpg] file:/srv/apt stable main" >/etc/apt/sources.list.d/lmntd.list
snapshot >"$out/before.txt"

step "apt-get install lmntd from the signed repository (stable, $V1)"
apt-get update -q 2>&1 | tail -n 3
if apt-get update -q 2>&1 | grep -Ei 'NO_PUBKEY|not signed|unauthenticated|BADSIG'; then fail "apt does not trust the repository"; fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q lmntd
[ "$(dpkg-query -W -f='${Version}' lmntd)" = "$V1" ] || fail "installed version is not $V1"
lmntd --version

step "the sockets listen: group lmnt, 0660"
systemctl is-active lmntd.socket lmntd-klipper.socket
ss -xlp | grep -E '/run/lmntd/(api|klipper)\.sock' || fail "sockets not listening"
for s in /run/lmntd/api.sock /run/lmntd/klipper.sock; do
    perms=$(stat -c '%A %U %G' "$s")
    [ "$perms" = "srw-rw---- lmntd lmnt" ] || fail "$s is $perms"
done
timeout 30 lmnt status || true   # activates the daemon; unpaired for now
wait_for 30 "lmntd.service active" systemctl is-active lmntd.service
systemctl show -p User,MainPID,NRestarts lmntd.service

step "the LAN socket is off by default: not started with the daemon, nothing on 127.0.0.1:7130"
! systemctl --quiet is-active lmntd-http.socket || fail "lmntd-http.socket is active without being enabled"
! systemctl --quiet is-enabled lmntd-http.socket || fail "lmntd-http.socket is enabled by the package"
! ss -ltn | grep -q '127.0.0.1:7130' || fail "something listens on 127.0.0.1:7130"

step "lmnt setup --dry-run changes nothing"
lmnt setup --dry-run
[ "$(sha256sum /home/pi/printer_data/config/printer.cfg)" = "$cfg_sum" ] || fail "--dry-run changed printer.cfg"

step "lmnt setup wires the stand-in's Klipper (user pi) into lmntd"
lmnt setup
id -nG pi | grep -qw lmnt || fail "pi is not in group lmnt"
getfacl -cp /home/pi | grep -q '^user:lmntd:--x' || fail "no ACL for lmntd on /home/pi"
grep -q '^BindReadOnlyPaths=-/home/pi/printer_data/config$' /etc/systemd/system/lmntd.service.d/klipper.conf
grep -q '^user = "pi"$' /etc/lmntd/lmntd.toml.d/50-setup.toml || fail "setup's settings are not in the drop-in"
# setup leaves the conffile as shipped: it alone never causes a conffile prompt.
[ -z "$(dpkg --verify lmntd)" ] || { dpkg --verify lmntd; fail "lmnt setup changed a file of the package"; }
readlink /home/pi/klipper/klippy/extras/encrypted_file_bridge.py
systemctl restart klipper.service   # the new group
lmnt setup | tee "$out/setup-again.txt"
grep -q 'nothing to change' "$out/setup-again.txt" || fail "a second lmnt setup changed something"

step "lmntd reads Klipper's config inside its sandbox (the drop-in bind and the ACLs)"
systemd-run --wait --pipe --quiet -p User=lmntd -p ProtectHome=tmpfs \
    -p BindReadOnlyPaths=/home/pi/printer_data/config head -n 3 /home/pi/printer_data/config/printer.cfg

step "the marketplace simulator on the container's loopback; lmntd pointed at it"
systemd-run --unit=marketsim --quiet /usr/local/bin/lmnt-marketsim serve --auto-approve --dir /srv/marketsim
wait_for 30 "the simulator's admin API" lmnt-marketsim state
sed -i -e '/^\[marketplace\]$/a url = "https://127.0.0.1:8443"\ntls_ca_file = "/srv/marketsim/ca.pem"' \
       -e '/^\[push\]$/a base_url = "https://127.0.0.1:8445"' /etc/lmntd/lmntd.toml
lmnt restart --when-idle
wait_for 30 "lmntd back with the new settings" sh -c 'timeout 10 lmnt status --json | grep -q 127.0.0.1:8443'

step "lmnt pair (the simulator approves at once)"
timeout 90 lmnt pair
lmnt status

step "a job from the simulator prints through the stand-in running as pi"
lmnt-marketsim create-job /systest/cube.gcode | tee "$out/job.json"
job=$(sed -n 's/.*"print_job_id": *"\([^"]*\)".*/\1/p' "$out/job.json")
[ -n "$job" ] || fail "no job id"
wait_for 120 "the success report of job $job" sh -c "lmnt-marketsim status $job | grep -q '\"status\": \"success\"'"
lmnt-marketsim status "$job" | grep '"status"'
klipper_user=$(ps -o user= -p "$(systemctl show -p MainPID --value klipper.service)")
[ "$klipper_user" = pi ] || fail "the stand-in runs as '$klipper_user', not pi"
echo "the Klipper stand-in runs as $klipper_user; lmntd as $(ps -o user= -p "$(systemctl show -p MainPID --value lmntd.service)")"
journalctl -u klipper.service --no-pager -o cat | tail -n 5
lmnt jobs | tee "$out/jobs.txt"
grep -q "$job .*succeeded" "$out/jobs.txt" || fail "lmnt jobs does not list $job as succeeded"

step "Klipper's config directory moves: lmntd still starts (the bind is optional), lmnt status answers"
mv /home/pi/printer_data/config /home/pi/printer_data/config.moved
systemctl restart lmntd.service
wait_for 30 "lmntd active without Klipper's config" systemctl is-active lmntd.service
pid_moved=$(systemctl show -p MainPID --value lmntd.service)
sleep 6   # longer than RestartSec=5s: a failing start would have been retried by now
systemctl --quiet is-active lmntd.service && [ "$(systemctl show -p MainPID --value lmntd.service)" = "$pid_moved" ] ||
    fail "lmntd does not stay up without Klipper's config directory: $(systemctl show -p Result,ExecMainStatus,NRestarts lmntd.service)"
timeout 20 /usr/bin/lmnt status >/dev/null || fail "lmnt status does not answer with the config directory gone"
mv /home/pi/printer_data/config.moved /home/pi/printer_data/config
systemctl restart lmntd.service
wait_for 30 "lmntd back" sh -c 'timeout 10 lmnt status --json | grep -q 127.0.0.1:8443'

step "state before the upgrade"
state_files() { find /var/lib/lmntd -maxdepth 1 -type f \( -name '*.sealed' -o -name '*.key' -o -name '*token*.json' \) -exec sha256sum {} + | sort -k2; }
state_files | tee "$out/state-v1.txt"
[ -s "$out/state-v1.txt" ] || fail "no sealed key or token in /var/lib/lmntd"
conf_sum=$(sha256sum /etc/lmntd/lmntd.toml /etc/lmntd/lmntd.toml.d/50-setup.toml /etc/systemd/system/lmntd.service.d/klipper.conf /etc/lmntd/setup.json)
pid_v1=$(systemctl show -p MainPID --value lmntd.service)

step "unattended upgrade to beta ($V2, whose shipped lmntd.toml changed; the owner edited it too): state and configuration kept, daemon restarted when idle"
echo "deb [signed-by=/usr/share/keyrings/lmntd-archive-keyring.gpg] file:/srv/apt beta main" >>/etc/apt/sources.list.d/lmntd.list
apt-get update -q 2>&1 | tail -n 2
# What a fleet runs (image/README.md, README.md): keep the owner's conffile,
# take the package's where the owner changed nothing; no prompt, no stdin.
DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade </dev/null ||
    fail "apt-get upgrade failed (exit $?)"
[ "$(dpkg-query -W -f='${Status} ${Version}' lmntd)" = "install ok installed $V2" ] || fail "lmntd is not installed at $V2: $(dpkg-query -W -f='${Status} ${Version}' lmntd)"
[ -f /etc/lmntd/lmntd.toml.dpkg-dist ] && grep -q 'changed in the upgrade build' /etc/lmntd/lmntd.toml.dpkg-dist ||
    fail "the new shipped lmntd.toml is not beside the owner's as lmntd.toml.dpkg-dist"
rm /etc/lmntd/lmntd.toml.dpkg-dist   # the owner has read it
wait_for 60 "lmntd $V2 running" sh -c "timeout 10 lmnt status --json | grep -q '\"version\": *\"$V2\"'"
[ "$(systemctl show -p MainPID --value lmntd.service)" != "$pid_v1" ] || fail "the daemon was not restarted"
state_files | diff "$out/state-v1.txt" - || fail "the upgrade changed the sealed key or the token"
[ "$(sha256sum /etc/lmntd/lmntd.toml /etc/lmntd/lmntd.toml.d/50-setup.toml /etc/systemd/system/lmntd.service.d/klipper.conf /etc/lmntd/setup.json)" = "$conf_sum" ] ||
    fail "the upgrade changed the configuration"
lmnt status | tee "$out/status-v2.txt"
lmnt jobs >"$out/jobs-v2.txt" 2>&1 || true
grep -q "$job" "$out/jobs-v2.txt" ||
    fail "the job history is gone after the upgrade: $(cat "$out/jobs-v2.txt"; ls -la /var/lib/lmntd/jobs)"
systemctl is-active lmntd.socket lmntd-klipper.socket

step "remove, reinstall; the LAN socket turned on as the README says, while lmntd runs: postinst unmasks what postrm masked"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q lmntd
[ "$(sha256sum /home/pi/printer_data/config/printer.cfg)" = "$cfg_sum" ] || fail "remove did not restore printer.cfg"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q lmntd
# The owner's usual case: lmntd is running (systemd refuses to start a
# socket while its service runs, so the README says enable, then restart).
timeout 30 lmnt status >/dev/null || true
wait_for 30 "lmntd.service active" systemctl is-active lmntd.service
pid_running=$(systemctl show -p MainPID --value lmntd.service)
systemctl enable lmntd-http.socket || fail "lmntd-http.socket cannot be enabled after a reinstall"
lmnt restart --when-idle
wait_for 30 "lmntd listening on 127.0.0.1:7130" sh -c "ss -ltnp | grep '127.0.0.1:7130' | grep -q lmntd"
ss -ltnp | grep '127.0.0.1:7130'
[ "$(systemctl show -p MainPID --value lmntd.service)" != "$pid_running" ] || fail "lmntd was not restarted"
systemctl --quiet is-active lmntd-http.socket || fail "lmntd-http.socket is not active after lmntd's restart"
# Left enabled: the purge must take the owner's links too.

step "purge: everything the package and lmnt setup created is gone"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q lmntd
[ "$(sha256sum /home/pi/printer_data/config/printer.cfg)" = "$cfg_sum" ] || fail "printer.cfg not restored"
! id -nG pi | grep -qw lmnt || fail "pi still in group lmnt"
! getent passwd lmntd || fail "user lmntd left"
! getent group lmnt || fail "group lmnt left"
[ ! -e /run/lmntd ] || fail "/run/lmntd left"
! ss -ltn | grep -q '127.0.0.1:7130' || fail "something still listens on 127.0.0.1:7130"
sed -i '/ beta main$/d' /etc/apt/sources.list.d/lmntd.list   # the test's own change
! systemctl list-unit-files 'lmntd*' | grep -q lmntd || fail "lmntd units left"
snapshot >"$out/after.txt"
# The owner's backup of printer.cfg stays on purpose.
if ! diff <(grep -v 'printer.cfg.lmntd-.*\.bak' "$out/before.txt") <(grep -v 'printer.cfg.lmntd-.*\.bak' "$out/after.txt"); then
    fail "the purge left the system different from before the install"
fi
grep -c . "$out/before.txt" | sed 's/^/files and hashes compared: /'
step "all container checks passed"

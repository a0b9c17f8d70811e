"""The whole system for the extras' end-to-end tests: the real lmntd binary
(cmd/lmntd, software sealer, temporary state directory) paired with the
real marketplace simulator (cmd/lmnt-marketsim serve, HTTPS with its own
CA, push stream, admin API), all on loopback, as `lmnt-demo` runs them.

The test drives the fake Klipper's reactor itself; every wait here takes a
`pump` callable that keeps that reactor running, so the extras keep talking
to lmntd while the test waits for the daemon or the simulator.
"""
import getpass
import http.client
import json
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request

from .bridge_harness import GO_PATHS, REPO_ROOT

# The commands built for the test, by binary name.
COMMANDS = ("lmntd", "lmnt-marketsim")


def build_commands(out_dir):
    """go build lmntd and lmnt-marketsim into out_dir; {name: path}."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(GO_PATHS + [env.get("PATH", "")])
    proc = subprocess.run(
        ["go", "build", "-o", out_dir + os.sep]
        + ["./cmd/" + name for name in COMMANDS],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode != 0:
        raise AssertionError("building %s failed:\n%s" % (
            ", ".join(COMMANDS), proc.stdout.decode(errors="replace")))
    return {name: os.path.join(out_dir, name) for name in COMMANDS}


def wait_until(predicate, what, pump, timeout=10., every=0.05):
    """Pump until predicate() is true; predicate runs at most every `every`
    seconds of real time (it may make HTTP calls). Returns its value."""
    deadline = time.monotonic() + timeout
    next_check = 0.
    while True:
        now = time.monotonic()
        if now >= next_check:
            value = predicate()
            if value:
                return value
            next_check = now + every
        if now > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s"
                                 % (timeout, what))
        pump()


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError as e:
        return "(%s)" % (e,)
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


def _direct_opener(context=None):
    """urllib without the environment's proxies: everything is loopback."""
    handlers = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class MarketSim:
    """lmnt-marketsim serve on ephemeral loopback ports."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "marketsim.log")
        self.proc = None
        self.urls = {}
        self.ca_file = None
        self._admin = _direct_opener()

    def start(self, timeout=15.):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--api", "127.0.0.1:0",
                 "--storage", "127.0.0.1:0", "--push", "127.0.0.1:0",
                 "--admin", "127.0.0.1:0", "--dir", self.workdir,
                 "--keep-alive", "200ms"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log)
        # Its banner names the addresses it got; read it on a thread so a
        # silent simulator fails the wait instead of hanging the test.
        lines = queue.Queue()

        def read(stream):
            for line in stream:
                lines.put(line.decode(errors="replace"))
            stream.close()
            lines.put(None)
        self._reader = threading.Thread(target=read, args=(self.proc.stdout,),
                                        daemon=True)
        self._reader.start()
        labels = {"marketplace API": "api", "storage host": "storage",
                  "push stream": "push", "admin API": "admin",
                  "test CA": "ca"}
        deadline = time.monotonic() + timeout
        while len(self.urls) < len(labels):
            try:
                line = lines.get(timeout=max(0., deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError("lmnt-marketsim did not start:\n"
                                     + tail(self.log_path))
            for label, key in labels.items():
                if line.strip().startswith(label + " "):
                    self.urls[key] = line.strip()[len(label):].split()[0]
        self.ca_file = self.urls.pop("ca")
        for key in ("api", "push", "admin"):
            if not self.urls[key].startswith(("https://127.0.0.1:",
                                              "http://127.0.0.1:")):
                raise AssertionError("simulator %s is not on loopback: %s"
                                     % (key, self.urls[key]))

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("lmnt-marketsim ignored SIGTERM")
        finally:
            self._reader.join(5)
            self.proc = None

    # ---- the admin API (the web shop and back office) ------------------
    def admin(self, method, path, body=None,
              content_type="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        req = urllib.request.Request(self.urls["admin"] + path, data=body,
                                     method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with self._admin.open(req, timeout=10) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def approve(self, code):
        return self.admin("POST", "/admin/pairings/approve",
                          {"code": code})["printer_id"]

    def create_job(self, printer_id, gcode):
        return self.admin(
            "POST", "/admin/jobs?" + urllib.parse.urlencode(
                {"printer_id": printer_id}),
            gcode, "application/octet-stream")

    def status_history(self, job_id):
        return self.admin("GET", "/admin/jobs/%s/status"
                          % urllib.parse.quote(job_id))["history"]

    def printer_queue(self, token):
        """The print queue as the printer sees it (GET poll-print-queue
        with its token): the jobs' DEK packages and IVs, which the admin
        API does not show."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        req = urllib.request.Request(
            self.urls["api"] + "/api/printer-agent/poll-print-queue",
            headers={"Authorization": "Bearer " + token})
        with _direct_opener(ctx).open(req, timeout=10) as resp:
            return json.loads(resp.read())["jobs"]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status = status


# A printer.cfg as an owner has it: a 235x235x250 bed-slinger with a 0.4 mm
# nozzle, the lmntd sections and the README's SDCARD_PRINT_FILE macro.
PRINTER_CFG = """\
# Ender-3-style printer, lmntd end-to-end test
[mcu]
serial: /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0

[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 3000
max_z_velocity: 5
max_z_accel: 100

[stepper_x]
step_pin: PB13
dir_pin: !PB12
enable_pin: !PB14
microsteps: 16
rotation_distance: 40
endstop_pin: ^PC0
position_endstop: 0
position_max: 235
homing_speed: 50

[stepper_y]
step_pin: PB10
dir_pin: !PB2
enable_pin: !PB11
microsteps: 16
rotation_distance: 40
endstop_pin: ^PC1
position_endstop: 0
position_max: 235
homing_speed: 50

[stepper_z]
step_pin: PB0
dir_pin: PC5
enable_pin: !PB1
microsteps: 16
rotation_distance: 8
endstop_pin: ^PC2
position_endstop: 0.0
position_max: 250

[extruder]
step_pin: PB3
dir_pin: !PB4
enable_pin: !PD1
microsteps: 16
rotation_distance: 34.406
nozzle_diameter: 0.400
filament_diameter: 1.750
heater_pin: PC8
sensor_type: EPCOS 100K B57560G104F
sensor_pin: PA0
control: pid
pid_Kp: 21.527
pid_Ki: 1.063
pid_Kd: 108.982
min_temp: 0
max_temp: 250

[heater_bed]
heater_pin: PC9
sensor_type: ATC Semitec 104GT-2
sensor_pin: PC4
control: pid
pid_Kp: 54.027
pid_Ki: 0.770
pid_Kd: 948.182
min_temp: 0
max_temp: 130

[virtual_sdcard]
path: {gcodes}

[pause_resume]

[display_status]

[encrypted_file_bridge]
socket_path: {bridge}

[secure_print]

[gcode_macro SDCARD_PRINT_FILE]
rename_existing: BASE_SDCARD_PRINT_FILE
gcode:
    {{% if params.FILENAME is defined and params.FILENAME.startswith('virtual_') %}}
        SET_GCODE_FD FILENAME="{{params.FILENAME}}"
    {{% else %}}
        BASE_SDCARD_PRINT_FILE {{rawparams}}
    {{% endif %}}
"""


class Lmntd:
    """The real lmntd: a temporary configuration, the software sealer bound
    to a fake host root's machine-id, the marketplace simulator, and
    jobs.auto_start = false (every job waits for a clear bed)."""

    def __init__(self, binary, workdir, sim):
        self.binary = binary
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        self.runtime_dir = os.path.join(workdir, "run")
        self.api_socket = os.path.join(self.runtime_dir, "api.sock")
        self.bridge_socket = os.path.join(self.runtime_dir, "klipper.sock")
        self.gcodes = os.path.join(workdir, "printer_data", "gcodes")
        self.printer_cfg = os.path.join(workdir, "printer_data", "config",
                                        "printer.cfg")
        self.host_root = os.path.join(workdir, "host")
        self.config = os.path.join(workdir, "lmntd.toml")
        self.log_path = os.path.join(workdir, "lmntd.log")
        self.sim = sim
        self.proc = None
        self._write_files()

    def _write_files(self):
        for d in (self.gcodes, os.path.dirname(self.printer_cfg),
                  os.path.join(self.host_root, "etc")):
            os.makedirs(d, exist_ok=True)
        with open(self.printer_cfg, "w") as f:
            f.write(PRINTER_CFG.format(gcodes=self.gcodes,
                                       bridge=self.bridge_socket))
        with open(os.path.join(self.host_root, "etc", "machine-id"),
                  "w") as f:
            f.write(secrets.token_hex(16) + "\n")
        with open(self.config, "w") as f:
            f.write("""\
api_profile = "current"

[marketplace]
url = {api}
tls_ca_file = {ca}
check_interval = "5s"

[push]
enabled = true
base_url = {push}

[paths]
state_directory = {state}
runtime_directory = {runtime}

[seal]
backend = "software"

[klipper]
user = {user}
config_file = {printer_cfg}
bridge_socket = {bridge}
status_interval = "1s"

[jobs]
auto_start = false

[api]
socket = {api_socket}

[migration]
import_moonraker = false
""".format(**{k: json.dumps(v) for k, v in dict(
                api=self.sim.urls["api"], ca=self.sim.ca_file,
                push=self.sim.urls["push"], state=self.state_dir,
                runtime=self.runtime_dir, user=getpass.getuser(),
                printer_cfg=self.printer_cfg, bridge=self.bridge_socket,
                api_socket=self.api_socket).items()}))

    def start(self, pump, timeout=15.):
        # The log file is the child's only: the parent keeps no fd of it,
        # so restarts do not change the test process's fd table.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--config", self.config,
                 "--host-root", self.host_root],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={"PATH": "/usr/bin:/bin", "HOME": self.workdir,
                     "LANG": "C.UTF-8"})

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("lmntd exited with %d:\n%s" % (
                    self.proc.returncode, tail(self.log_path)))
            try:
                self.api("GET", "/lmnt/v1/status")
                return True
            except (OSError, ApiError):
                return False
        wait_until(serving, "lmntd's API socket", pump, timeout)

    def stop(self, pump, timeout=15.):
        """SIGTERM, as systemd stops it; the exit must be clean."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            wait_until(lambda: proc.poll() is not None, "lmntd to exit",
                       pump, timeout)
        except AssertionError:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise AssertionError("lmntd exited with %d after SIGTERM:\n%s"
                                 % (proc.returncode, tail(self.log_path)))

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    # ---- the local API (what `lmnt` uses) ------------------------------
    def api(self, method, path, body=None):
        conn = _UnixHTTPConnection(self.api_socket, timeout=10)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise ApiError(resp.status, raw.decode(errors="replace"))
        return json.loads(raw) if raw else None

    def status(self):
        return self.api("GET", "/lmnt/v1/status")

    def jobs(self):
        return self.status()["jobs"]

    def pair(self, pump):
        """Pair as `lmnt pair` does, the owner approving the code in the
        web shop (the simulator's admin API). Returns the printer id."""
        pairing = self.api("POST", "/machine/lmnt_marketplace/pair/start", {
            "printer_name": "E2E printer", "manufacturer": "Creality",
            "model": "Ender-3", "extruder_count": 1})
        code = pairing["pairing_code"]
        printer_id = self.sim.approve(code)

        def paired():
            p = self.api("GET", "/machine/lmnt_marketplace/pair/status")
            if p["status"] in ("expired", "failed"):
                raise AssertionError("pairing %s: %s" % (
                    p["status"], p.get("message")))
            return p["status"] == "paired"
        wait_until(paired, "the pairing to complete", pump, 15.)
        return code, printer_id

    def printer_token(self):
        """The printer JWT from the state directory (0600, like the
        original plugin's)."""
        with open(os.path.join(self.state_dir,
                               "marketplace-token.json")) as f:
            return json.load(f)["printer_token"]

    def job(self, job_id):
        """(where, JobInfo): where is active, queue or finished."""
        snap = self.jobs()
        if snap.get("active") and snap["active"]["id"] == job_id:
            return "active", snap["active"]
        for where in ("queue", "finished"):
            for info in snap[where]:
                if info["id"] == job_id:
                    return where, info
        return None, None

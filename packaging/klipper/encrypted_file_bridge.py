# [encrypted_file_bridge]: the connection between Klipper and lmntd.
#
# lmntd (the LMNT Marketplace printer agent) decrypts a print job into a
# sealed memfd and hands that fd to Klipper over a unix SEQPACKET socket.
# This extra owns that socket: it connects, speaks bridge protocol v1
# (docs/bridge-protocol.md), reconnects on its own, reports what Klipper is
# doing (status), shows lmntd's console lines, and routes the requests that
# carry a file (print, file, cancel) to the [secure_print] extra, which does
# the loading into virtual_sdcard.
#
# Everything runs on Klipper's reactor and nothing here may block it: the
# socket is non-blocking and registered with reactor.register_fd, retries
# and polling are reactor timers, and G-code runs from reactor callbacks.
#
# Python 3.9+ (Klipper v0.11 to master, Kalico), standard library only.
#
# This file may be distributed under the terms of the GNU GPLv3 license.
import array
import errno
import json
import logging
import os
import re
import socket
import sys

EXTRA_VERSION = "1.0.0"
PROTOCOL_VERSION = 1
MAX_PACKET = 65536
DEFAULT_SOCKET_PATH = "/run/lmntd/klipper.sock"
SECTIONS = ("encrypted_file_bridge", "secure_print")

# Reconnect delay: 1 s, then 2 s. lmntd's socket is socket-activated, so a
# connect attempt costs one syscall and succeeds as soon as systemd holds
# the socket again; a longer backoff only left Klipper disconnected (up to
# 29 s) after lmntd came back.
RECONNECT_MIN_DELAY = 1.0
RECONNECT_MAX_DELAY = 2.0
# A daemon that speaks another protocol version is retried this rarely.
INCOMPATIBLE_RETRY_DELAY = 30.0
# How often Klipper's state is compared with what lmntd was last told:
# every second while a print is loaded or something is pending, else every
# IDLE_POLL_INTERVAL. Klipper events (ready, shutdown, file load/reset,
# Kalico's print_stats events) and this extra's own actions trigger a
# comparison at once.
POLL_INTERVAL = 1.0
IDLE_POLL_INTERVAL = 5.0
# Full status period while printing, and while idle, until the daemon's
# welcome says otherwise (status_interval, idle_status_interval).
DEFAULT_STATUS_INTERVAL = 5.0
DEFAULT_IDLE_STATUS_INTERVAL = 60.0
# Packets waiting for the daemon to drain its socket; beyond this the daemon
# is stuck and the connection is dropped (it will be re-established).
MAX_QUEUED_PACKETS = 64
SEND_RETRY_DELAY = 0.05
# Packets handled per reactor wake-up, so a flood cannot starve Klipper.
MAX_PACKETS_PER_WAKE = 32
# A fetch the daemon never answers is reported after this long.
FETCH_TIMEOUT = 10.0
CONSOLE_MAX_CHARS = 512  # the daemon cuts its lines at 512 bytes

# Klipper keeps printing when its state is polled; these print_stats and
# virtual_sdcard fields change continuously during a print, so they travel
# with the periodic full status, not as "changes".
_CONTINUOUS_FIELDS = {
    "print_stats": ("total_duration", "print_duration", "filament_used"),
    "virtual_sdcard": ("progress", "file_position"),
}

_URL_RE = re.compile(r"://")
_TOKENISH_RUN_RE = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_HEX_RUN_RE = re.compile(r"[0-9A-Fa-f]{32,}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def console_text_refusal(text):
    """Return why a console line must not be shown, or None if it may.

    lmntd never sends secrets to the console; this is defence in depth so
    that a bug there cannot put a URL, a token or key material into
    Klipper's console, Mainsail's history and every client's screen.
    """
    if not isinstance(text, str) or not text.startswith("LMNT:"):
        return "does not start with LMNT:"
    if len(text) > CONSOLE_MAX_CHARS:
        return "longer than %d characters" % CONSOLE_MAX_CHARS
    if _CONTROL_RE.search(text):
        return "contains control characters"
    if _URL_RE.search(text):
        return "contains a URL"
    if "eyJ" in text:
        return "contains what looks like a JSON web token"
    if _HEX_RUN_RE.search(text):
        return "contains a long hexadecimal run (key material?)"
    for run in _TOKENISH_RUN_RE.findall(text):
        separators = run.count("_") + run.count("-")
        mixed = (re.search(r"[A-Z]", run) and re.search(r"[a-z]", run)
                 and re.search(r"[0-9]", run))
        # Words joined by _ or - (file names) have many separators; base64
        # and base64url runs have few or none.
        if mixed and separators * 10 < len(run):
            return "contains a base64-looking run (token or key?)"
    return None


def detect_klipper(printer):
    """Return (flavour, features) of the running Klipper, by inspection."""
    vsd = printer.lookup_object("virtual_sdcard", None)
    reactor = printer.get_reactor()
    kalico = type(printer).__module__.startswith("klippy.")
    features = []
    if vsd is not None:
        module = type(vsd).__module__
        kalico = kalico or module.startswith("klippy.") or hasattr(
            vsd, "with_subdirs")
        if hasattr(vsd, "print_with_gcode_provider"):
            features.append("gcode_provider")
        if hasattr(vsd, "executor"):
            features.append("executor")
        if hasattr(vsd, "_handle_analyze_shutdown"):
            features.append("analyze_shutdown")
        if hasattr(vsd, "on_error_gcode"):
            features.append("on_error_gcode")
        vsd_module = _module_of(vsd)
        if vsd_module is not None and hasattr(vsd_module,
                                              "DEFAULT_ERROR_GCODE"):
            features.append("byte_positions")
    else:
        features.append("no_virtual_sdcard")
    if hasattr(reactor, "assert_no_pause"):
        features.append("assert_no_pause")
    return ("kalico" if kalico else "klipper"), features


def _interval(value, default):
    """A period from the daemon's welcome, bounded to 1 s .. 300 s."""
    if isinstance(value, (int, float)) and not isinstance(
            value, bool) and value > 0:
        return min(max(float(value), 1.), 300.)
    return default


def _module_of(obj):
    return sys.modules.get(type(obj).__module__)


class ProtocolError(Exception):
    """A packet from the daemon that breaks bridge protocol v1."""


class _Connection:
    """One connected socket: its reactor registration and send queue."""

    def __init__(self, sock):
        self.sock = sock
        self.fd_handle = None
        self.welcomed = False
        self.queue = []          # encoded packets not yet accepted
        self.retry_timer = None  # set while the queue waits for space


class EncryptedFileBridge:
    def __init__(self, config):
        self.printer = config.get_printer()
        self.reactor = self.printer.get_reactor()
        self.name = config.get_name()
        self.socket_path = config.get("socket_path", DEFAULT_SOCKET_PATH)
        self.gcode = self.printer.lookup_object("gcode")
        self.conn = None
        self.status_interval = DEFAULT_STATUS_INTERVAL
        self.idle_status_interval = DEFAULT_IDLE_STATUS_INTERVAL
        self.daemon_version = None
        self.daemon_state = {}       # lmntd's last `state` packet
        self.last_error = None
        self.printing = False        # a print is loaded, running or paused
        self.backoff = RECONNECT_MIN_DELAY
        self.last_sent_discrete = None
        self.next_full_status = 0.
        self.ready_confirmed = False
        self.last_print_state = None
        self.pending_fetches = {}    # request id -> (name, deadline)
        self.request_counter = 0
        self.reported_problems = set()
        self.closed_for_good = False
        self.reconnect_waketime = self.reactor.NEVER
        # The first attempt runs as soon as the reactor is free: after the
        # whole config is loaded, and before klippy:ready, so lmntd also
        # learns about a Klipper that fails to start.
        self.connect_timer = self.reactor.register_timer(
            self._connect_event, self.reactor.NOW)
        self.poll_timer = self.reactor.register_timer(
            self._poll_event, self.reactor.NEVER)
        self.printer.register_event_handler("klippy:ready",
                                            self._handle_state_change)
        self.printer.register_event_handler("klippy:shutdown",
                                            self._handle_state_change)
        self.printer.register_event_handler("klippy:disconnect",
                                            self._handle_disconnect)
        # Changes Klipper announces: compare at once instead of waiting for
        # the idle poll (v0.11+ reset_file; Kalico's print_stats events).
        for event in ("virtual_sdcard:reset_file", "virtual_sdcard:load_file",
                      "print_stats:start", "print_stats:printing",
                      "print_stats:paused", "print_stats:complete",
                      "print_stats:error", "print_stats:cancelled",
                      "print_stats:standby"):
            self.printer.register_event_handler(
                event, lambda *args: self.request_status_check())

    # ---- API used by [secure_print] -------------------------------------
    def is_connected(self):
        return self.conn is not None and self.conn.welcomed

    def send_result(self, request_id, ok, error=None):
        packet = {"type": "result", "id": request_id, "ok": bool(ok)}
        if not ok:
            packet["error"] = str(error or "failed")
        self._send(packet)
        self.request_status_check()

    def send_fetch(self, name):
        """Ask the daemon for the file `name` it holds; False if offline."""
        if not self.is_connected():
            return False
        self.request_counter += 1
        request_id = "fetch-%d" % self.request_counter
        self.pending_fetches[request_id] = (
            name, self.reactor.monotonic() + FETCH_TIMEOUT)
        self._send({"type": "fetch", "id": request_id, "name": name})
        return True

    def send_command(self, name, args):
        """Tell the daemon the owner ran an lmnt G-code command."""
        if name == "LMNT_READY":
            # Carried by every status too, so a confirmation given while
            # lmntd is offline still reaches it after the reconnect. It
            # covers the print that has just ended (secure_print refuses
            # it during a print), so that end must not clear it again.
            self.ready_confirmed = True
            print_stats = self.printer.lookup_object("print_stats", None)
            if print_stats is not None:
                self.last_print_state = print_stats.get_status(
                    self.reactor.monotonic()).get("state")
        if not self.is_connected():
            return False
        self._send({"type": "command", "name": name, "args": args})
        self.request_status_check()
        return True

    def request_status_check(self):
        """Compare state with what lmntd knows on the next reactor turn."""
        if self.is_connected():
            self.reactor.update_timer(self.poll_timer, self.reactor.NOW)

    # ---- connection ------------------------------------------------------
    def _connect_event(self, eventtime):
        if self.closed_for_good or self.conn is not None:
            return self.reactor.NEVER
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET
                             | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            self._note_problem(
                "connect", "cannot connect to lmntd at %s (%s); retrying"
                % (self.socket_path, os.strerror(e.errno or errno.EIO)),
                console=False)
            return self._schedule_reconnect(eventtime)
        conn = _Connection(sock)
        conn.fd_handle = self.reactor.register_fd(sock.fileno(),
                                                  self._readable_event)
        self.conn = conn
        logging.info("encrypted_file_bridge: connected to %s",
                     self.socket_path)
        flavour, features = detect_klipper(self.printer)
        start_args = self.printer.get_start_args()
        self._send({
            "type": "hello",
            "extra_version": EXTRA_VERSION,
            "klipper": {
                "version": str(start_args.get("software_version", "unknown")),
                "flavour": flavour,
                "features": features,
            },
            "config_file": str(start_args.get("config_file", "")),
            "sections": [s for s in SECTIONS
                         if self.printer.lookup_object(s, None) is not None],
        })
        if self.conn is None:
            # The hello could not be sent; _disconnect chose the retry time
            # and this timer's return value must not override it.
            return self.reconnect_waketime
        return self.reactor.NEVER

    def _schedule_reconnect(self, eventtime):
        delay = self.backoff
        self.backoff = min(self.backoff * 2., RECONNECT_MAX_DELAY)
        return eventtime + delay

    def _disconnect(self, reason, retry_delay=None):
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        self.reactor.unregister_fd(conn.fd_handle)
        if conn.retry_timer is not None:
            self.reactor.unregister_timer(conn.retry_timer)
        conn.sock.close()
        conn.queue = []
        self.reactor.update_timer(self.poll_timer, self.reactor.NEVER)
        self.last_sent_discrete = None
        self.daemon_state = {}
        logging.info("encrypted_file_bridge: disconnected from lmntd: %s",
                     reason)
        for request_id, (name, _) in sorted(self.pending_fetches.items()):
            self._console_error(
                "LMNT: lmntd disconnected before sending %s" % (name,))
        self.pending_fetches.clear()
        if self.closed_for_good:
            return
        if retry_delay is None:
            retry_delay = self.backoff
            self.backoff = min(self.backoff * 2., RECONNECT_MAX_DELAY)
        self.reconnect_waketime = self.reactor.monotonic() + retry_delay
        self.reactor.update_timer(self.connect_timer, self.reconnect_waketime)

    # ---- sending ---------------------------------------------------------
    def _send(self, packet):
        conn = self.conn
        if conn is None:
            return
        packet = dict(packet, v=PROTOCOL_VERSION)
        data = json.dumps(packet, separators=(",", ":")).encode("utf-8")
        if len(data) > MAX_PACKET:
            logging.error("encrypted_file_bridge: dropping oversized %s "
                          "packet (%d bytes)", packet.get("type"), len(data))
            return
        if packet["type"] == "status":
            # Only the newest status matters; never queue a stale one.
            conn.queue = [(t, d) for t, d in conn.queue if t != "status"]
        conn.queue.append((packet["type"], data))
        if len(conn.queue) > MAX_QUEUED_PACKETS:
            self._disconnect("lmntd does not read its socket")
            return
        self._flush(conn)

    def _flush(self, conn):
        while conn.queue and self.conn is conn:
            try:
                conn.sock.send(conn.queue[0][1])
            except (BlockingIOError, InterruptedError):
                if conn.retry_timer is None:
                    conn.retry_timer = self.reactor.register_timer(
                        lambda et, c=conn: self._retry_flush(c),
                        self.reactor.monotonic() + SEND_RETRY_DELAY)
                return
            except OSError as e:
                self._disconnect("send failed: %s" % (os.strerror(e.errno),))
                return
            conn.queue.pop(0)

    def _retry_flush(self, conn):
        if conn.retry_timer is not None:
            self.reactor.unregister_timer(conn.retry_timer)
            conn.retry_timer = None
        if self.conn is conn:
            self._flush(conn)
        return self.reactor.NEVER

    # ---- receiving -------------------------------------------------------
    def _readable_event(self, eventtime):
        conn = self.conn
        for _ in range(MAX_PACKETS_PER_WAKE):
            if self.conn is not conn:
                return
            try:
                data, fds = self._receive(conn.sock)
            except (BlockingIOError, InterruptedError):
                return
            except ProtocolError as e:
                self._protocol_violation(str(e))
                return
            except OSError as e:
                self._disconnect("receive failed: %s"
                                 % (os.strerror(e.errno),))
                return
            if data is None:
                self._disconnect("lmntd closed the connection")
                return
            try:
                self._handle_packet(data, fds)
            finally:
                # Whoever took an fd replaced it with None in the list.
                for fd in fds:
                    if fd is not None:
                        os.close(fd)

    def _receive(self, sock):
        """One packet and its fds, or (None, []) at end of stream."""
        fd_size = array.array("i").itemsize
        data, ancdata, flags, _ = sock.recvmsg(
            MAX_PACKET + 1, socket.CMSG_SPACE(2 * fd_size),
            socket.MSG_CMSG_CLOEXEC)
        fds = []
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(cdata[:len(cdata) - len(cdata) % fd_size])
                fds.extend(received)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            raise ProtocolError("packet larger than %d bytes or with too "
                                "many file descriptors" % MAX_PACKET)
        if not data and not fds:
            return None, []
        return data, fds

    def _handle_packet(self, data, fds):
        try:
            packet = json.loads(data.decode("utf-8"))
        except ValueError:
            self._protocol_violation("packet is not UTF-8 JSON")
            return
        if not isinstance(packet, dict) or not isinstance(
                packet.get("type"), str):
            self._protocol_violation("packet is not an object with a type")
            return
        if packet.get("v") != PROTOCOL_VERSION:
            self._version_mismatch(packet.get("v"))
            return
        kind = packet["type"]
        if fds and kind not in ("print", "file"):
            self._protocol_violation("a %s packet carried a file descriptor"
                                     % (kind,))
            return
        if not self.conn.welcomed:
            if kind == "welcome":
                self._handle_welcome(packet)
            elif kind == "error":
                self._handle_error(packet)
            else:
                self._protocol_violation("%s before welcome" % (kind,))
            return
        handler = {
            "print": self._handle_print,
            "file": self._handle_print,
            "cancel": self._handle_cancel,
            "console": self._handle_console,
            "ping": self._handle_ping,
            "state": self._handle_state,
            "error": self._handle_error,
            "welcome": lambda p, f: None,
        }.get(kind)
        if handler is None:
            # Answer like the daemon does for our unknown types.
            self._send({"type": "error", "id": packet.get("id"),
                        "code": "unknown_type",
                        "message": "unknown packet type %r" % (kind,)})
            return
        if kind in ("print", "file"):
            handler(packet, fds)
        else:
            handler(packet)

    def _handle_welcome(self, packet):
        self.conn.welcomed = True
        self.backoff = RECONNECT_MIN_DELAY
        self.reported_problems.clear()
        self.status_interval = _interval(packet.get("status_interval"),
                                         DEFAULT_STATUS_INTERVAL)
        # An older lmntd does not send it, and expects status_interval.
        self.idle_status_interval = _interval(
            packet.get("idle_status_interval"), self.status_interval)
        version = packet.get("daemon_version")
        self.daemon_version = version if isinstance(version, str) else None
        self.last_error = None
        logging.info("encrypted_file_bridge: lmntd %s welcomed us "
                     "(status every %.0f s, %.0f s when idle)",
                     self.daemon_version, self.status_interval,
                     self.idle_status_interval)
        self.next_full_status = 0.
        self.reactor.update_timer(self.poll_timer, self.reactor.NOW)

    def _handle_print(self, packet, fds):
        request_id = packet.get("id")
        if len(fds) != 1:
            self._protocol_violation("%s packet without exactly one file "
                                     "descriptor" % (packet["type"],))
            return
        if packet["type"] == "file":
            fetch = self.pending_fetches.pop(request_id, None)
            if fetch is None:
                self.send_result(request_id, False,
                                 "no fetch with id %r is pending"
                                 % (request_id,))
                return
        secure_print = self.printer.lookup_object("secure_print", None)
        if secure_print is None:
            msg = "[secure_print] is missing from printer.cfg"
            self._console_error("LMNT: " + msg)
            self.send_result(request_id, False, msg)
            return
        fd = fds[0]
        fds[0] = None  # secure_print owns it now, and closes it
        secure_print.start_print(packet, fd)

    def _handle_cancel(self, packet):
        secure_print = self.printer.lookup_object("secure_print", None)
        if secure_print is None:
            self.send_result(packet.get("id"), False,
                             "[secure_print] is missing from printer.cfg")
            return
        secure_print.cancel_print(packet)

    def _handle_console(self, packet):
        text = packet.get("text")
        refusal = console_text_refusal(text)
        if refusal is not None:
            # The text itself is not logged: it may be what we refuse.
            logging.warning("encrypted_file_bridge: refused a console line "
                            "from lmntd: %s", refusal)
            return
        self.gcode.respond_info(text)

    def _handle_state(self, packet):
        # What lmntd wants Klipper's users to see: get_status() shows it
        # (Mainsail's object view, macros). Only known fields, typed.
        state = {}
        code = packet.get("pairing_code")
        if isinstance(code, str) and re.match(r"^[A-Za-z0-9-]{1,16}$", code):
            state["pairing_code"] = code
        state["waiting_for_ready"] = packet.get("waiting_for_ready") is True
        job = packet.get("job")
        if isinstance(job, dict):
            title = job.get("title")
            job_id = job.get("id")
            state["job_title"] = (title[:200] if isinstance(title, str)
                                  else "")
            state["job_id"] = job_id if isinstance(job_id, str) else None
            job_state = job.get("state")
            state["job_state"] = (job_state if isinstance(job_state, str)
                                  else None)
        error = packet.get("last_error")
        if isinstance(error, str) and console_text_refusal(
                "LMNT: " + error) is None:
            state["last_error"] = error
        self.daemon_state = state

    def _handle_ping(self, packet):
        self._send({"type": "pong", "id": packet.get("id")})

    def _handle_error(self, packet):
        code = packet.get("code")
        message = str(packet.get("message") or "")
        request_id = packet.get("id")
        if request_id in self.pending_fetches:
            name, _ = self.pending_fetches.pop(request_id)
            if code == "unknown_file":
                self._console_error(
                    "LMNT: SET_GCODE_FD: lmntd has no file named %s "
                    "(unknown or expired)" % (name,))
            else:
                self._console_error("LMNT: SET_GCODE_FD %s failed: %s"
                                    % (name, code))
            return
        if code == "forbidden":
            self._note_problem(
                "forbidden", "LMNT: lmntd refused this Klipper: %s (run "
                "'lmnt setup' so Klipper's user may connect)" % (message,))
            return
        if code == "unsupported_version":
            self._note_problem(
                "version", "LMNT: lmntd does not speak bridge protocol v%d "
                "(it supports %s); update the lmntd Klipper extras"
                % (PROTOCOL_VERSION, packet.get("supported")))
            self._disconnect("unsupported protocol version",
                             retry_delay=INCOMPATIBLE_RETRY_DELAY)
            return
        logging.warning("encrypted_file_bridge: lmntd reported error %s: %s",
                        code, message)

    def _version_mismatch(self, version):
        self._note_problem(
            "version", "LMNT: lmntd speaks bridge protocol v%s, this extra "
            "speaks v%d; update the lmntd Klipper extras"
            % (version, PROTOCOL_VERSION))
        self._disconnect("unsupported protocol version %r" % (version,),
                         retry_delay=INCOMPATIBLE_RETRY_DELAY)

    def _protocol_violation(self, what):
        logging.error("encrypted_file_bridge: protocol error from lmntd: %s",
                      what)
        self._send({"type": "error", "code": "bad_packet", "message": what})
        self._disconnect("protocol error: " + what)

    # ---- status ----------------------------------------------------------
    def _collect_status(self, eventtime):
        message, state = self.printer.get_state_message()
        status = {"type": "status",
                  "klippy": {"state": state, "message": message}}
        print_stats = self.printer.lookup_object("print_stats", None)
        if print_stats is not None:
            ps = print_stats.get_status(eventtime)
            info = ps.get("info") or {}
            status["print_stats"] = {
                "state": ps.get("state"),
                "filename": ps.get("filename"),
                "total_duration": ps.get("total_duration"),
                "print_duration": ps.get("print_duration"),
                "filament_used": ps.get("filament_used"),
                "message": ps.get("message"),
                "info": {"total_layer": info.get("total_layer"),
                         "current_layer": info.get("current_layer")},
            }
            if ps.get("state") in ("printing", "paused") or (
                    self.last_print_state in ("printing", "paused")):
                # A confirmation covers the bed as it was: a print that
                # runs, or has just ended, occupies it again.
                self.ready_confirmed = False
            self.last_print_state = ps.get("state")
        vsd = self.printer.lookup_object("virtual_sdcard", None)
        if vsd is not None:
            vs = vsd.get_status(eventtime)
            file_path = vs.get("file_path")
            status["virtual_sdcard"] = {
                "file_path": None if file_path is None else str(file_path),
                "progress": vs.get("progress"),
                "is_active": vs.get("is_active"),
                "file_position": vs.get("file_position"),
                "file_size": vs.get("file_size"),
            }
        status["ready_confirmed"] = self.ready_confirmed
        return status

    @staticmethod
    def _discrete_part(status):
        discrete = {}
        for key, value in status.items():
            if isinstance(value, dict):
                skip = _CONTINUOUS_FIELDS.get(key, ())
                value = {k: v for k, v in value.items() if k not in skip}
            discrete[key] = value
        return discrete

    def _poll_event(self, eventtime):
        if not self.is_connected():
            return self.reactor.NEVER
        for request_id, (name, deadline) in list(
                self.pending_fetches.items()):
            if eventtime >= deadline:
                del self.pending_fetches[request_id]
                self._console_error("LMNT: SET_GCODE_FD: lmntd did not send "
                                    "%s in time" % (name,))
        status = self._collect_status(eventtime)
        discrete = self._discrete_part(status)
        sd = status.get("virtual_sdcard") or {}
        self.printing = bool(sd.get("is_active")) or (
            status.get("print_stats") or {}).get("state") in (
                "printing", "paused")
        period = (self.status_interval if self.printing
                  else self.idle_status_interval)
        if discrete != self.last_sent_discrete or (
                eventtime >= self.next_full_status):
            self.last_sent_discrete = discrete
            self.next_full_status = eventtime + period
            self._send(status)
        else:
            # A print that just started must not wait out an idle period.
            self.next_full_status = min(self.next_full_status,
                                        eventtime + period)
        if self.printing or self.pending_fetches:
            return eventtime + POLL_INTERVAL
        return eventtime + IDLE_POLL_INTERVAL

    # ---- status for Mainsail/Fluidd and macros ----------------------------
    def get_status(self, eventtime):
        """printer["encrypted_file_bridge"] in macros, Moonraker (object
        queries and subscriptions) and Mainsail's object view."""
        state = self.daemon_state
        return {
            "connected": self.is_connected(),
            "lmntd_version": self.daemon_version if self.is_connected()
            else None,
            "pairing_code": state.get("pairing_code"),
            "waiting_for_ready": bool(state.get("waiting_for_ready")),
            "ready_confirmed": self.ready_confirmed,
            "job_id": state.get("job_id"),
            "job_title": state.get("job_title", ""),
            "job_state": state.get("job_state"),
            "last_error": state.get("last_error") or self.last_error,
        }

    # ---- Klipper events --------------------------------------------------
    def _handle_state_change(self):
        # klippy:ready / klippy:shutdown handlers must not pause (Klipper
        # master asserts it); only schedule work here.
        self.request_status_check()

    def _handle_disconnect(self):
        # RESTART, FIRMWARE_RESTART or exit: this printer object is over.
        self.closed_for_good = True
        self.reactor.update_timer(self.connect_timer, self.reactor.NEVER)
        self._disconnect("Klipper is restarting")

    # ---- console helpers -------------------------------------------------
    def _console_error(self, text):
        logging.warning("encrypted_file_bridge: %s", text)
        self.gcode.respond_raw("!! " + text)

    def _note_problem(self, key, text, console=True):
        """Log (and show) a connection problem once, not every retry."""
        self.last_error = text
        if key in self.reported_problems:
            return
        self.reported_problems.add(key)
        logging.error("encrypted_file_bridge: %s", text)
        if console:
            self._console_error(text)


def load_config(config):
    return EncryptedFileBridge(config)

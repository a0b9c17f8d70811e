"""A test case base: the real lmntd bridge server
(cmd/lmnt-bridgeharness) on a private socket, and a fake Klipper of one
modelled version that loads the real extras and connects to it."""
import logging
import os
import tempfile
import unittest

from .bridge_harness import BridgeHarness, build_harness, private_tmpdir
from .fakeklipper.printer import make_printer

_BUILD_DIR = None
_BINARY = None


def harness_binary():
    """Built once per test process (go build is cached across runs)."""
    global _BUILD_DIR, _BINARY
    if _BINARY is None:
        _BUILD_DIR = tempfile.TemporaryDirectory(prefix="lmnt-bridgeharness-")
        _BINARY = build_harness(_BUILD_DIR.name)
    return _BINARY


def open_fds():
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))


class LogCapture(logging.Handler):
    """klippy.log: what the extras log."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, level=logging.DEBUG):
        return [r.getMessage() for r in self.records if r.levelno >= level]


def capture_logs(testcase):
    """Collect every log record of the test (klippy.log logs INFO too)."""
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    testcase.addCleanup(root.setLevel, old_level)
    testcase.addCleanup(root.removeHandler, capture)
    return capture


class RigTestCase(unittest.TestCase):
    MODEL = "v0.12"
    README_MACRO = True

    @classmethod
    def setUpClass(cls):
        cls.binary = harness_binary()

    def setUp(self):
        self.tmp = private_tmpdir(self, 0o755)
        self.socket_path = os.path.join(self.tmp, "klipper.sock")
        self.gcodes = os.path.join(self.tmp, "gcodes")
        os.mkdir(self.gcodes)
        self.log = capture_logs(self)
        self.printer = None
        self.daemon = BridgeHarness(self.binary, self.socket_path)
        self.daemon.start(self.pump)
        self.addCleanup(self._stop_daemon)

    def _stop_daemon(self):
        if self.daemon.proc is not None:
            self.daemon.stop(self.pump if self.printer else None)

    # ---- helpers ---------------------------------------------------------
    def make_printer(self, model=None, sections=None, start=True):
        if sections is None:
            sections = {
                "virtual_sdcard": {"path": self.gcodes},
                "encrypted_file_bridge": {"socket_path": self.socket_path},
                "secure_print": {},
            }
        # The daemon's pipes are open already; anything beyond this is
        # the extras' (or the fake Klipper's) to release.
        self.fds_before = open_fds()
        self.printer = make_printer(model or self.MODEL, sections,
                                    readme_macro=self.README_MACRO)
        self.addCleanup(self._assert_clean_klipper)
        if start:
            self.printer.start()
        return self.printer

    def _assert_clean_klipper(self):
        if self.printer is not None:
            # Release what a test left running, like a Klipper RESTART.
            self.printer.disconnect()
            self.assertEqual(self.printer.violations, [],
                             "the extras misused Klipper")

    def connect(self, model=None):
        """Start a printer and wait until the daemon has its hello."""
        printer = self.make_printer(model)
        hello = self.daemon.wait("connected", self.pump)["hello"]
        self.daemon.wait("status", self.pump)
        return printer, hello

    def pump(self):
        if self.printer is not None:
            self.printer.reactor.run_once()

    def run_until(self, predicate, what, timeout=10.):
        self.printer.reactor.run_until(predicate, timeout, what)

    @property
    def vsd(self):
        return self.printer.lookup_object("virtual_sdcard")

    def print_state(self):
        ps = self.printer.lookup_object("print_stats")
        return ps.get_status(self.printer.reactor.monotonic())

    def console(self):
        return list(self.printer.gcode.console)

    def wait_status(self, predicate, what, timeout=10.):
        """Next status event the daemon got that satisfies predicate; the
        reactor clock is moved on so the extra's 1 s poll runs at once."""
        def pump():
            self.printer.reactor.advance(0.25)
            self.pump()
        return self.daemon.wait("status", pump, lambda ev: predicate(
            ev["status"]), timeout)["status"]

    def shutdown_printer(self):
        """klippy:disconnect, as on RESTART; the extras must let go of
        every fd and socket."""
        self.printer.disconnect()
        self.daemon.wait("disconnected", self.pump)

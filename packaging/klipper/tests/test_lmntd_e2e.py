"""End to end: the real extras in a fake Klipper, the real lmntd binary and
the real marketplace simulator.

A job created in the simulator (the web shop) reaches lmntd over HTTPS and
the push stream, is decrypted into a sealed memfd and printed by the real
[encrypted_file_bridge] and [secure_print] extras; the next job waits for
the owner's LMNT_READY, typed into Klipper's console; the bed-clear state
survives a restart of lmntd; nothing secret reaches Klipper's console.
"""
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import unittest

from .bridge_harness import fixture
from .fakeklipper.printer import make_printer
from .rig import capture_logs, open_fds
from .system_rig import Lmntd, MarketSim, build_commands, tail, wait_until

CUBE = "prusaslicer_cube20_pla_0.20mm.gcode"
CUBE_LAYERS = 100  # PrusaSlicer's ;LAYER_CHANGE count (fixtures/README.md)

# How long a job must stay queued, in real time, to count as "does not
# start": longer than the extra's status interval (1 s, lmntd's setting),
# so lmntd has seen an idle Klipper and still not started it.
HOLD_SECONDS = 1.5

# A run this long of base64 or hex characters looks like key material or
# a token (the brief of issue 11: nothing secret on the console).
SECRETISH_RUN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")

_commands = {}
_build_dir = None


def setUpModule():
    global _build_dir
    _build_dir = tempfile.mkdtemp(prefix="lmnt-e2e-bin-")
    _commands.update(build_commands(_build_dir))


def tearDownModule():
    shutil.rmtree(_build_dir, ignore_errors=True)


def cube_bytes():
    with open(fixture(CUBE), "rb") as f:
        return f.read()


class SystemTestCase(unittest.TestCase):
    """Per test: a simulator, a paired lmntd on a fresh state directory and
    a fake Klipper of MODEL with the real extras, all in one temp dir."""

    MODEL = None

    def setUp(self):
        self.source = cube_bytes()
        self.workdir = tempfile.mkdtemp(prefix="lmnt-e2e-")
        self.addCleanup(self._remove_workdir)
        self.log = capture_logs(self)
        self.secrets = []  # strings that must never reach the console
        self.read_from = {}  # job id: its first entry in vsd.read_log
        self.console_from = {}  # job id: the console line it came after
        self.printer = None

        self.sim = MarketSim(_commands["lmnt-marketsim"], self.workdir)
        self.addCleanup(self._stop_sim)
        self.sim.start()

        self.daemon = Lmntd(_commands["lmntd"], self.workdir, self.sim)
        self.addCleanup(self._stop_daemon)
        self.daemon.start(self.idle)

        # Everything the test process holds open from here on belongs to
        # the fake Klipper and the extras, and must be gone after
        # klippy:disconnect.
        self.fds_before = open_fds()
        self.threads_before = set(threading.enumerate())
        self.printer = make_printer(
            self.MODEL, {
                "virtual_sdcard": {"path": self.daemon.gcodes},
                "encrypted_file_bridge": {
                    "socket_path": self.daemon.bridge_socket},
                "secure_print": {},
            }, config_file=self.daemon.printer_cfg, readme_macro=True)
        self.printer.start()
        self.hold_prints()
        wait_until(lambda: self.daemon.status()["klipper"]["connected"],
                   "the extra to connect to lmntd", self.pump)
        klipper = self.daemon.status()["klipper"]
        self.assertTrue(klipper["config_ok"], klipper)
        self.assertEqual(klipper["config_file"], self.daemon.printer_cfg)

        code, self.printer_id = self.daemon.pair(self.pump)

        def push_connected():
            printers = self.sim.admin("GET", "/admin/state")["printers"]
            return [p for p in printers if p["id"] == self.printer_id
                    and p["push_connections"] > 0]
        self.wait(push_connected, "lmntd to open the push stream")
        self.token = self.daemon.printer_token()
        self.secrets += [self.token, self.sim.urls["api"]]
        self.assertTrue(any(code in line for line in self.console()),
                        "the pairing code was not shown in the console: %s"
                        % (self.console(),))

    # ---- teardown: every process stopped, nothing left open ------------
    def tearDown(self):
        # Runs after the test, failed or not, and before the cleanups,
        # which stop whatever an assertion here left running.
        self._assert_console_clean()
        self.daemon.stop(self.pump)
        for path in (self.daemon.api_socket, self.daemon.bridge_socket):
            self.assertFalse(os.path.exists(path),
                             "lmntd left %s behind" % (path,))
        self.printer.disconnect()
        self.printer.reactor.run_once(0)
        self.assertEqual(self.printer.violations, [],
                         "the extras misused Klipper")
        self.assertEqual(self.printer.reactor.fd_count(), 0,
                         "the extras left an fd registered with the reactor")
        self.assertEqual(open_fds(), self.fds_before,
                         "fd leak in the Klipper process")
        self.assertEqual(set(threading.enumerate()), self.threads_before,
                         "a thread of the Klipper process outlived it")
        self.sim.stop()

    def _stop_daemon(self):
        if self.daemon.proc is not None:
            self.daemon.kill()
        if self.printer is not None:
            self.printer.disconnect()

    def _stop_sim(self):
        if self.sim.proc is not None:
            self.sim.proc.kill()
            self.sim.proc.wait()
            self.sim.proc = None

    def _remove_workdir(self):
        shutil.rmtree(self.workdir)
        self.assertFalse(os.path.exists(self.workdir))

    # ---- driving ---------------------------------------------------------
    def pump(self):
        """One turn of Klipper's reactor; its clock runs ahead so the
        extra's 1 s status poll and reconnect backoff need no real wait."""
        self.printer.reactor.advance(0.1)
        self.printer.reactor.run_once(0.01)

    @staticmethod
    def idle():
        time.sleep(0.01)

    def wait(self, predicate, what, timeout=15.):
        try:
            return wait_until(predicate, what, self.pump, timeout)
        except AssertionError as e:
            raise AssertionError("%s\nlmntd log:\n%s" % (
                e, tail(self.daemon.log_path, 25))) from None

    def console(self):
        return list(self.printer.gcode.console)

    @property
    def vsd(self):
        return self.printer.lookup_object("virtual_sdcard")

    def print_state(self):
        return self.printer.lookup_object("print_stats").get_status(
            self.printer.reactor.monotonic())

    def gcode(self, script):
        """The owner types a command in Mainsail's console."""
        self.printer.gcode.run_script(script)

    # ---- the marketplace side ---------------------------------------------
    def create_job(self, check_now=True):
        """A purchase: the simulator encrypts the cube for this printer.
        The job's DEK package and IV, as the printer's queue carries them,
        join the secrets the console must never show.

        lmntd polls at most every 5 s (the API's floor, pushes included);
        check_now asks it to look at once, as the owner's "check for jobs"
        button does (the plugin API's check_jobs), to keep the test short.
        """
        # What virtual_sdcard reads from here on is this job's: the
        # previous print is over, and this one may start at any moment.
        read_from = len(self.vsd.read_log)
        console_from = len(self.printer.gcode.console)
        job = self.sim.create_job(self.printer_id, self.source)
        job_id = job["print_job_id"]
        self.read_from[job_id] = read_from
        self.console_from[job_id] = console_from
        wire = [j for j in self.sim.printer_queue(self.token)
                if j["print_job_id"] == job_id]
        self.assertEqual(len(wire), 1, "job %s not in the printer's queue"
                         % (job_id,))
        dek, iv = wire[0]["gcode_dek_encrypted_hex"], wire[0]["gcode_iv_hex"]
        self.assertGreaterEqual(len(dek), 32)
        self.assertGreaterEqual(len(iv), 24)
        self.secrets += [dek, iv, wire[0]["encrypted_gcode_download_url"]]
        self.secrets += [part for part in dek.split(":") if len(part) >= 16]
        if check_now:
            self.daemon.api("POST", "/machine/lmnt_marketplace/check_jobs")
        return job_id

    def wait_for_success(self, job_id):
        def reported():
            history = self.sim.status_history(job_id)
            return history and history[-1]["status"] == "success" and history
        history = self.wait(reported, "the marketplace to hear success")
        statuses = [h["status"] for h in history]
        self.assertIn("printing", statuses)
        self.assertNotIn("failure", statuses)
        where, info = self.daemon.job(job_id)
        self.assertEqual((where, info["state"]), ("finished", "succeeded"),
                         info)
        return statuses

    def hold_prints(self):
        """The toolhead queue is full: a print that starts makes no
        progress until print_job lets it run, so its start is seen."""
        self.vsd.hold_moves = True

    def print_job(self, job_id):
        """Follow a job that is free to start (under hold_prints) through
        the extras to the end; check what virtual_sdcard read and what the
        marketplace heard."""
        self.assertTrue(self.vsd.hold_moves, "call hold_prints first")
        name = "virtual_%s.gcode" % (job_id,)
        read_from = self.read_from[job_id]
        self.wait(lambda: self.print_state()["filename"] == name
                  and self.print_state()["state"] == "printing",
                  "Klipper to start %s" % (name,))
        # Applied after virtual_sdcard's reset, so it is there now.
        self.assertEqual(self.print_state()["info"]["total_layer"],
                         CUBE_LAYERS)
        def marketplace_heard_printing():
            history = self.sim.status_history(job_id)
            return history and history[-1]["status"] == "printing"
        self.wait(marketplace_heard_printing,
                  "the marketplace to hear printing")
        started = "// LMNT: started %s" % (self._shown_name(job_id),)
        self.wait(lambda: started in self.console(),
                  "the console to show %r" % (started,))
        self.vsd.hold_moves = False
        self.wait(lambda: self.print_state()["state"] == "complete",
                  "the print of %s to complete" % (name,))
        read = "".join(self.vsd.read_log[read_from:]).encode("utf-8")
        self.assertEqual(len(read), len(self.source))
        self.assertEqual(read, self.source,
                         "virtual_sdcard read other bytes than the source")
        self.assertEqual(self.vsd.file_position, len(self.source))
        self.assertEqual(self.print_state()["info"]["total_layer"],
                         CUBE_LAYERS, "TOTAL_LAYER did not stick")
        self.wait_for_success(job_id)
        self.vsd.hold_moves = True
        finished = "// LMNT: finished %s: " % (self._shown_name(job_id),)
        self.assertTrue([l for l in self.console()
                         if l.startswith(finished)], self.console())

    def _shown_name(self, job_id):
        # internal/jobs displayName: long ids are cut to their ends.
        if len(job_id) >= 20:
            return job_id[:8] + "\u2026" + job_id[-4:]
        return job_id

    def assert_waits_for_ready(self, job_id):
        """The job stays queued over HOLD_SECONDS: virtual_sdcard idle,
        lmntd says why, the console asks for LMNT_READY."""
        def queued():
            where, info = self.daemon.job(job_id)
            if where in ("active", "finished"):
                self.fail("job %s did not wait for LMNT_READY: %s"
                          % (job_id, info))
            return where == "queue"
        self.wait(queued, "lmntd to queue job %s" % (job_id,))
        prompt = "// LMNT: waiting for LMNT_READY: is the bed clear?"
        self.wait(lambda: prompt in self.console()[
            self.console_from[job_id]:], "the LMNT_READY prompt")
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            self.pump()
            self.assertFalse(self.vsd.is_active(), "a job started")
            self.assertIsNone(self.vsd.current_file, "a file was loaded")
        snap = self.daemon.jobs()
        self.assertIsNone(snap.get("active"))
        self.assertEqual([j["id"] for j in snap["queue"]], [job_id])
        self.assertEqual(snap["queue"][0]["state"], "accepted")
        self.assertIn("LMNT_READY", snap["queue"][0]["message"])
        self.assertIn("LMNT_READY", snap["waiting"])
        self.assertIn("bed is clear", snap["waiting"])
        self.assertFalse(snap["bed_clear"])
        self.assertFalse(snap["auto_start"])
        self.assertNotIn("printing", [h["status"] for h in
                                      self.sim.status_history(job_id)])

    def confirm_bed_clear(self):
        self.gcode("LMNT_READY")
        self.assertIn("// LMNT: bed clear, confirmation sent to lmntd",
                      self.console())
        self.wait(lambda: self.daemon.jobs()["bed_clear"]
                  or self.daemon.jobs().get("active"),
                  "lmntd to take the confirmation")

    def restart_daemon(self):
        """SIGTERM lmntd and start it again on the same state directory.
        Klipper's reactor does not run while lmntd starts, so the state
        the new lmntd shows first is its own, from its state directory,
        not what the extra tells it after reconnecting."""
        self.daemon.stop(self.pump)
        bridge = self.printer.lookup_object("encrypted_file_bridge")
        self.wait(lambda: not bridge.is_connected(),
                  "the extra to see lmntd go")
        self.daemon.start(self.idle)
        snap = self.daemon.jobs()
        self.wait(lambda: self.daemon.status()["klipper"]["connected"],
                  "the extra to reconnect")
        return snap

    # ---- the console must stay clean ----------------------------------------
    def _assert_console_clean(self):
        lines = self.console()
        lmnt = [l for l in lines if "LMNT:" in l]
        self.assertTrue(lmnt, "no LMNT: line reached the console")
        for line in lmnt:
            self.assertRegex(line, r"^(// |!! )LMNT: ")
        # Every step of the story is meant to work: no error lines.
        self.assertEqual([l for l in lines if l.startswith("!!")], [])
        for line in lines + self.log.messages():  # console, klippy.log
            self.assertNotIn("://", line, "a URL reached Klipper")
            for secret in self.secrets:
                self.assertNotIn(secret, line, "a secret reached Klipper")
        for line in lines:  # (klippy.log has the socket's path)
            self.assertIsNone(SECRETISH_RUN.search(line),
                              "token-like text reached the console: %r"
                              % (line,))
        # lmntd sent nothing the extra's own secret filter had to drop.
        self.assertEqual([m for m in self.log.messages(logging.WARNING)
                          if "refused a console line" in m], [])


class _Story:
    """The acceptance story, told once per Klipper model below. One story,
    not one test per step: each step starts from the bed state the one
    before left, as on a real printer."""

    def test_marketplace_jobs_print_only_on_a_clear_bed(self):
        # 1. The first purchase arrives by itself (push stream and poll)
        # and prints through the extras on a fresh, clear bed.
        first = self.create_job(check_now=False)
        self.print_job(first)

        # 2. The part is still on the bed: the next job waits for the
        # owner's LMNT_READY in the console, then prints.
        second = self.create_job()
        self.assert_waits_for_ready(second)
        self.confirm_bed_clear()
        self.print_job(second)

        # 3a. lmntd restarts while the bed is not clear: it still is not,
        # and a job created after the restart waits.
        snap = self.restart_daemon()
        self.assertFalse(snap["bed_clear"], "restart forgot the occupied bed")
        third = self.create_job()
        self.assert_waits_for_ready(third)
        self.confirm_bed_clear()
        self.print_job(third)

        # 3b. lmntd restarts after the owner confirmed the bed clear: the
        # confirmation holds, and the next job starts at once.
        self.confirm_bed_clear()
        snap = self.restart_daemon()
        self.assertTrue(snap["bed_clear"], "restart forgot LMNT_READY")
        fourth = self.create_job()
        self.print_job(fourth)
        self.assertFalse([h for h in self.sim.status_history(fourth)
                          if "LMNT_READY" in h.get("message", "")],
                         "the job waited for LMNT_READY")

        jobs = [first, second, third, fourth]
        for job_id in jobs:
            self.assertIn("// LMNT: job received: %s"
                          % (self._shown_name(job_id),), self.console())
        prompts = [l for l in self.console() if l.startswith(
            "// LMNT: waiting for LMNT_READY")]
        self.assertEqual(len(prompts), 2, self.console())
        self.assertFalse(self.daemon.jobs()["bed_clear"],
                         "a finished print must leave the bed not clear")


class KlipperV013(_Story, SystemTestCase):
    MODEL = "v0.13"


class KlipperMaster2026(_Story, SystemTestCase):
    MODEL = "master-2026"


if __name__ == "__main__":
    unittest.main()

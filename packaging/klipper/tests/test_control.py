"""Pause, resume, cancel, refusals, the SET_GCODE_FD macro path, LMNT_READY,
reconnects and cleanup, against the real lmntd bridge server."""
import json
import logging
import os
import subprocess
import time

from .bridge_harness import BridgeHarness, fixture
from .rig import RigTestCase, open_fds

CUBE = "prusaslicer_cube20_pla_0.20mm.gcode"


def cube_bytes():
    with open(fixture(CUBE), "rb") as f:
        return f.read()


class PauseResumeCancel(RigTestCase):
    MODEL = "master-2026"

    def start_held_print(self, job_id="j1"):
        self.connect()
        self.vsd.hold_moves = True  # the toolhead queue is full
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id=job_id,
                         metadata={"total_layer": 100})
        result = self.daemon.wait("result", self.pump)
        self.assertTrue(result["ok"], result)
        self.wait_status(lambda s: s["print_stats"]["state"] == "printing",
                         "printing status")

    def let_lines_run(self, count):
        target = len(self.vsd.lines_run) + count
        self.vsd.hold_moves = False
        self.run_until(lambda: len(self.vsd.lines_run) >= target,
                       "%d more lines" % count)
        self.vsd.hold_moves = True

    def test_pause_resume_then_complete(self):
        self.start_held_print()
        self.let_lines_run(50)
        self.printer.gcode.run_script("PAUSE")
        self.assertEqual(self.print_state()["state"], "paused")
        paused_at = self.vsd.file_position
        status = self.wait_status(
            lambda s: s["print_stats"]["state"] == "paused", "paused status")
        self.assertEqual(status["virtual_sdcard"]["file_position"], paused_at)
        self.assertFalse(status["virtual_sdcard"]["is_active"])

        self.printer.gcode.run_script("RESUME")
        self.assertTrue(self.vsd.is_active())
        self.run_until(lambda: self.print_state()["state"] == "printing",
                       "virtual_sdcard's work timer to resume")
        self.wait_status(lambda s: s["print_stats"]["state"] == "printing"
                         and s["virtual_sdcard"]["is_active"],
                         "printing again")
        self.vsd.hold_moves = False
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        # After RESUME virtual_sdcard seeks back to file_position and reads
        # again, so compare what it executed: every line exactly once.
        self.assertEqual(self.vsd.lines_run,
                         cube_bytes().decode().split("\n")[:-1],
                         "pause/resume lost or repeated lines")
        self.assertEqual(self.vsd.file_position, len(cube_bytes()))
        self.assertEqual(self.print_state()["info"]["total_layer"], 100)

    def test_cancel_from_daemon(self):
        self.start_held_print()
        self.let_lines_run(20)
        self.daemon.send(cmd="cancel", job_id="j1", reason="owner cancelled")
        result = self.daemon.wait("result", self.pump)
        self.assertTrue(result["ok"], result)
        self.assertEqual(self.print_state()["state"], "cancelled")
        self.assertIsNone(self.vsd.current_file)
        self.wait_status(lambda s: s["print_stats"]["state"] == "cancelled",
                         "cancelled status")
        self.shutdown_printer()
        self.assertEqual(open_fds(), self.fds_before, "fd leak")

    def test_cancel_of_another_job_is_refused(self):
        self.start_held_print()
        self.daemon.send(cmd="cancel", job_id="other", reason="?")
        result = self.daemon.wait("result", self.pump)
        self.assertFalse(result["ok"])
        self.assertIn("not the current print", result["error"])
        self.assertEqual(self.print_state()["state"], "printing")

    def test_paused_print_is_cancelled_too(self):
        self.start_held_print()
        self.printer.gcode.run_script("PAUSE")
        self.daemon.send(cmd="cancel", job_id="j1", reason="owner cancelled")
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.assertEqual(self.print_state()["state"], "cancelled")

    def test_set_gcode_fd_while_printing_is_busy(self):
        self.start_held_print()
        with self.assertRaises(self.printer.gcode.error):
            self.printer.gcode.run_script(
                "SDCARD_PRINT_FILE FILENAME=virtual_x.gcode")
        self.assertIn("!! LMNT: SD busy: a print is running", self.console())


class Refusals(RigTestCase):
    def test_unsealed_memfd_is_refused(self):
        self.connect()
        self.daemon.send(cmd="print_unsealed", file=fixture(CUBE),
                         job_id="u1", metadata={})
        result = self.daemon.wait("result", self.pump)
        self.assertFalse(result["ok"])
        self.assertIn("not sealed", result["error"])
        self.assertEqual(self.print_state()["state"], "standby")
        self.assertIsNone(self.vsd.current_file)
        self.assertTrue(any(l.startswith("!! LMNT: print refused")
                            for l in self.console()), self.console())
        self.shutdown_printer()
        self.assertEqual(open_fds(), self.fds_before, "fd leak")

    def test_not_ready_klipper_refuses(self):
        self.connect()
        self.printer.shutdown("MCU 'mcu' shutdown: Timer too close")
        self.wait_status(lambda s: s["klippy"]["state"] == "shutdown",
                         "shutdown status")
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="s1",
                         metadata={})
        result = self.daemon.wait("result", self.pump)
        self.assertFalse(result["ok"])
        self.assertIn("Timer too close", result["error"])
        self.assertIsNone(self.vsd.current_file)

    def test_unknown_virtual_sdcard_shape(self):
        self.connect()

        class OddSD:
            """A virtual_sdcard this extra does not know."""
            current_file = None

            def is_active(self):
                return False

            def get_status(self, eventtime):
                return {}
        self.printer.objects["virtual_sdcard"] = OddSD()
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="o1",
                         metadata={})
        result = self.daemon.wait("result", self.pump)
        self.assertFalse(result["ok"])
        self.assertIn("unknown virtual_sdcard", result["error"])
        self.assertTrue(any("unknown virtual_sdcard" in l and
                            l.startswith("!! ") for l in self.console()))
        self.assertTrue(any("unknown virtual_sdcard" in m for m in
                            self.log.messages(logging.ERROR)))
        self.printer.objects.pop("virtual_sdcard")
        self.shutdown_printer()
        self.assertEqual(open_fds(), self.fds_before, "fd leak")

    def test_invalid_utf8_stalls_silently(self):
        # Why lmntd must gate UTF-8 before Klipper: virtual_sdcard's bare
        # except turns the decode error into a silent "paused".
        path = os.path.join(self.tmp, "bad.gcode")
        with open(path, "wb") as f:
            f.write(b"G1 X1\n; caf\xe9\nG1 X2\n")
        self.connect()
        self.daemon.send(cmd="print", file=path, job_id="b1", metadata={})
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.run_until(lambda: not self.vsd.is_active(), "the stall")
        state = self.print_state()
        self.assertEqual((state["state"], state["message"]), ("paused", ""))
        self.assertEqual(self.vsd.lines_run, [])


class MacroPath(RigTestCase):
    MODEL = "kalico"

    def test_held_file_prints_through_the_readme_macro(self):
        self.connect()
        self.daemon.send(cmd="hold", file=fixture(CUBE),
                         name="virtual_s1.gcode")
        # The harness reports nothing for a hold; a ping answered after
        # it proves lmntd holds the file before the macro asks for it.
        self.daemon.send(cmd="ping")
        self.daemon.wait("pong", self.pump)
        self.printer.gcode.run_script(
            "SDCARD_PRINT_FILE FILENAME=virtual_s1.gcode")
        fetch = self.daemon.wait("fetch", self.pump)
        self.assertEqual((fetch["name"], fetch["served"]),
                         ("virtual_s1.gcode", True), fetch)
        result = self.daemon.wait("result", self.pump)
        self.assertTrue(result["ok"], result)
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        self.assertEqual(self.print_state()["filename"], "virtual_s1.gcode")
        self.assertEqual("".join(self.vsd.read_log).encode(), cube_bytes())
        self.assertIn("// LMNT: asking lmntd for virtual_s1.gcode",
                      self.console())
        self.shutdown_printer()
        self.assertEqual(open_fds(), self.fds_before, "fd leak")

    def test_unknown_name_gets_a_console_error(self):
        self.connect()
        self.printer.gcode.run_script(
            'SDCARD_PRINT_FILE FILENAME="virtual_nope.gcode"')
        fetch = self.daemon.wait("fetch", self.pump)
        self.assertFalse(fetch["served"])
        expected = ("!! LMNT: SET_GCODE_FD: lmntd has no file named "
                    "virtual_nope.gcode (unknown or expired)")
        self.run_until(lambda: expected in self.console(), "console error")
        self.assertEqual(self.print_state()["state"], "standby")

    def test_ordinary_files_still_print(self):
        with open(os.path.join(self.gcodes, "plain.gcode"), "w") as f:
            f.write("G28\nG1 X10\n")
        self.connect()
        self.printer.gcode.run_script("SDCARD_PRINT_FILE FILENAME=plain.gcode")
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        self.assertEqual(self.vsd.lines_run, ["G28", "G1 X10"])
        fetches = [e for e in self.daemon.events if e["event"] == "fetch"]
        self.assertEqual(fetches, [])

    def test_bad_name_is_refused_locally(self):
        self.connect()
        with self.assertRaises(self.printer.gcode.error):
            self.printer.gcode.run_script("SET_GCODE_FD FILENAME=../etc")
        self.assertTrue(any("not an lmntd file name" in l
                            for l in self.console()))


class ReadyAndConsole(RigTestCase):
    def test_lmnt_ready_reaches_the_daemon(self):
        self.connect()
        self.printer.gcode.run_script("LMNT_READY")
        command = self.daemon.wait("command", self.pump)
        self.assertEqual(command["name"], "LMNT_READY")
        self.wait_status(lambda s: s["ready_confirmed"], "ready_confirmed")
        self.assertIn("// LMNT: bed clear, confirmation sent to lmntd",
                      self.console())

    def test_lmnt_ready_during_a_print_is_ignored(self):
        self.connect()
        self.vsd.hold_moves = True
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="busy",
                         metadata={"total_layer": 100})
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.wait_status(lambda s: s["print_stats"]["state"] == "printing",
                         "printing status")
        # Not an error: from the print's own end G-code an error would
        # fail the print.
        self.printer.gcode.run_script("LMNT_READY")
        self.assertTrue(any(l.startswith("// LMNT: a print is printing; "
                                         "LMNT_READY ignored")
                            for l in self.console()), self.console())
        self.assertEqual(self.print_state()["state"], "printing")
        self.vsd.hold_moves = False
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        status = self.wait_status(
            lambda s: s["print_stats"]["state"] == "complete", "complete")
        self.assertFalse(status["ready_confirmed"])
        self.assertEqual([e for e in self.daemon.events
                          if e["event"] == "command"], [])
        # After the print the confirmation counts, and the end it covers
        # does not clear it again.
        self.printer.gcode.run_script("LMNT_READY")
        self.assertEqual(self.daemon.wait("command", self.pump)["name"],
                         "LMNT_READY")
        self.wait_status(lambda s: s["ready_confirmed"]
                         and s["print_stats"]["state"] == "complete",
                         "ready_confirmed after the print")

    def test_a_print_clears_the_confirmation(self):
        self.connect()
        self.printer.gcode.run_script("LMNT_READY")
        self.wait_status(lambda s: s["ready_confirmed"], "ready_confirmed")
        self.vsd.hold_moves = True
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="next",
                         metadata={"total_layer": 100})
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        status = self.wait_status(
            lambda s: s["print_stats"]["state"] == "printing", "printing")
        self.assertFalse(status["ready_confirmed"])
        self.vsd.hold_moves = False
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        status = self.wait_status(
            lambda s: s["print_stats"]["state"] == "complete", "complete")
        self.assertFalse(status["ready_confirmed"])

    def test_confirmation_while_lmntd_is_away_arrives_later(self):
        self.connect()
        self.daemon.stop(self.pump)
        bridge = self.printer.lookup_object("encrypted_file_bridge")
        self.run_until(lambda: not bridge.is_connected(), "the disconnect")
        self.printer.gcode.run_script("LMNT_READY")
        self.assertIn("// LMNT: bed clear; lmntd is not connected, it will "
                      "be told when it reconnects", self.console())
        self.daemon = BridgeHarness(self.binary, self.socket_path)
        self.daemon.start(self.pump)
        self.printer.reactor.advance(1.0)  # the first backoff step
        self.daemon.wait("connected", self.pump)
        self.wait_status(lambda s: s["ready_confirmed"],
                         "ready_confirmed after the reconnect")

    def test_console_lines(self):
        self.connect()
        # The lines lmntd's job engine and pairing write (internal/jobs,
        # internal/daemon), with marketplace-style job ids.
        good = ["LMNT: pairing code K7Q2MX: enter it in the LMNT Marketplace",
                "LMNT: job received: job-12-a1b2c3d4e5f6",
                "LMNT: job received: 0e9e04df…26d5",
                "LMNT: job received: Xy7aB9cD…J3kL",
                "LMNT: downloading job-12-a1b2c3d4e5f6: 40%",
                "LMNT: waiting for LMNT_READY: is the bed clear?",
                "LMNT: started Benchy_with_Supports_PLA_MK3S_2h13m.gcode "
                "(local-01…cdef)",
                "LMNT: failed job-12-a1b2c3d4e5f6: Not compatible with this "
                "printer: sliced for a 0.4 mm nozzle, but the printer has a "
                "0.6 mm nozzle (nozzle_diameter at printer.cfg:56); if the "
                "nozzle was changed, update printer.cfg and restart Klipper",
                "LMNT: failed job-13-0a1b2c3d4e5f: Not compatible with this "
                "printer: the print spans X 150 to 260 mm, outside the X "
                "axis's travel 0 to 235 mm (stepper_x position_max at "
                "printer.cfg:22); it was sliced for another bed",
                "LMNT: finished Benchy_with_Supports_PLA_MK3S_2h13m"]
        secret = ["LMNT: see https://api.lmnt.market/jobs/1",
                  "LMNT: token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x",
                  "LMNT: key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b"
                  "822cd15d6c15b0f00a08",
                  "LMNT: dek q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJ+/="]
        for text in secret + good:
            self.daemon.send(cmd="console", text=text)
        self.run_until(lambda: "// " + good[-1] in self.console(),
                       "the console lines")
        shown = [l for l in self.console() if "LMNT:" in l]
        self.assertEqual(shown, ["// " + t for t in good])
        for line in shown:
            self.assertTrue(line.startswith("// LMNT: "))
        refused = [m for m in self.log.messages(logging.WARNING)
                   if "refused a console line" in m]
        self.assertEqual(len(refused), len(secret))
        for text in secret:  # nor does the refused text reach klippy.log
            self.assertFalse(any(text[6:] in m for m in self.log.messages()))

    def test_ping(self):
        self.connect()
        self.daemon.send(cmd="ping")
        pong = self.daemon.wait("pong", self.pump)
        self.assertGreaterEqual(pong["rtt_ms"], 0)


class Reconnect(RigTestCase):
    def test_daemon_restart(self):
        self.connect()
        bridge = self.printer.lookup_object("encrypted_file_bridge")
        self.daemon.stop(self.pump)
        self.run_until(lambda: not bridge.is_connected(), "the disconnect")
        self.assertFalse(bridge.get_status(0)["connected"])
        # lmntd stays away for a while (kill -9, then a slow restart): the
        # extra keeps trying.
        for _ in range(20):
            self.printer.reactor.advance(1.0)
            self.printer.reactor.run_once(0)
        # The daemon is back (socket activation would keep the socket).
        self.daemon = BridgeHarness(self.binary, self.socket_path)
        self.daemon.start(self.pump)
        back = self.printer.reactor.monotonic()
        self.assertLessEqual(bridge.connect_timer.waketime - back, 2.0,
                             "next attempt more than 2 s after lmntd is back")
        self.printer.reactor.advance(bridge.connect_timer.waketime - back)
        hello = self.daemon.wait("connected", self.pump)["hello"]
        self.assertEqual(hello["sections"],
                         ["encrypted_file_bridge", "secure_print"])
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="r1",
                         metadata={"total_layer": 100})
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        self.assertEqual("".join(self.vsd.read_log).encode(), cube_bytes())

    def test_backoff_while_daemon_is_away(self):
        self.connect()
        bridge = self.printer.lookup_object("encrypted_file_bridge")
        self.daemon.stop(self.pump)
        self.run_until(lambda: not bridge.is_connected(), "the disconnect")
        delays = []
        for _ in range(7):
            waketime = bridge.connect_timer.waketime
            delays.append(round(waketime - self.printer.reactor.monotonic()))
            self.printer.reactor.advance(waketime
                                         - self.printer.reactor.monotonic())
            self.printer.reactor.run_once(0)
        # Socket activation makes an attempt cheap: never more than 2 s
        # between attempts, so Klipper is back within 2 s of lmntd.
        self.assertEqual(delays, [1, 2, 2, 2, 2, 2, 2])
        # No console spam for a daemon that is away; one klippy.log line.
        self.assertFalse(any("LMNT" in l for l in self.console()))
        self.assertEqual(len([m for m in self.log.messages()
                              if "cannot connect to lmntd" in m]), 1)


PEER_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from tests.fakeklipper.printer import make_printer
printer = make_printer("v0.12", {
    "encrypted_file_bridge": {"socket_path": sys.argv[2]},
    "secure_print": {}})
printer.start()
printer.reactor.run_until(
    lambda: any("refused" in line for line in printer.gcode.console), 10.,
    "the daemon's refusal")
printer.disconnect()
print(json.dumps({"uid": os.getuid(), "console": printer.gcode.console}))
"""


class WrongUid(RigTestCase):
    def test_peer_with_another_uid_is_rejected_by_the_daemon(self):
        # The daemon allows only this test's uid; the extra runs as nobody.
        klipper_dir = os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))
        proc = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "/usr/bin/python3", "-B", "-c", PEER_SCRIPT, klipper_dir,
             self.socket_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.kill)
        rejected = self.daemon.wait("rejected", lambda: time.sleep(0.01))
        self.assertEqual(rejected["uid"], 65534)
        out, err = proc.communicate(timeout=15)
        self.assertEqual(proc.returncode, 0, err.decode())
        report = json.loads(out)
        self.assertEqual(report["uid"], 65534)
        self.assertTrue(any(
            line.startswith("!! LMNT: lmntd refused this Klipper")
            for line in report["console"]), report)
        connected = [e for e in self.daemon.events
                     if e["event"] == "connected"]
        self.assertEqual(connected, [])

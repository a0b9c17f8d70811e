"""Issue 18: on a shutdown during a print (M112, an MCU error), Klipper's
virtual_sdcard logs the file around the read position into klippy.log. The
fake virtual_sdcard does what each version does (klippy:shutdown handler up
to v0.13 and on Kalico, a deferred callback from klippy:analyze_shutdown on
master); these tests prove that an lmntd job leaves no byte of its G-code
in the log, and that its memfd is released at the shutdown."""
import logging
import os
import shutil

from .bridge_harness import fixture
from .fakeklipper.printer import MODELS
from .rig import RigTestCase

CUBE = "prusaslicer_cube20_pla_0.20mm.gcode"
FORMATTER = logging.Formatter("%(message)s")


def job_lines(path):
    """The job's G-code lines long enough to be recognised in a log."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    return {l for l in lines if len(l) >= 12 and not l.startswith(";")}


def memfds():
    out = []
    for n in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + n).startswith("/memfd:"):
                out.append(int(n))
        except OSError:
            pass
    return out


class _HoldMovesPast(list):
    """virtual_sdcard's list of file positions that holds the moves (a full
    toolhead queue) once the print has passed a position."""

    def __init__(self, vsd, position):
        list.__init__(self)
        self.vsd, self.position = vsd, position

    def append(self, position):
        list.append(self, position)
        if position > self.position:
            self.vsd.hold_moves = True

    def release(self):
        self.position = float("inf")
        self.vsd.hold_moves = False


class ShutdownLeavesNoPlaintext(RigTestCase):
    def klippy_log(self):
        # Every record as klippy.log would hold it, tracebacks included.
        return "\n".join(FORMATTER.format(r) for r in self.log.records)

    def print_until_midway(self, model, extras_first=False):
        sections = {"virtual_sdcard": {"path": self.gcodes},
                    "encrypted_file_bridge": {"socket_path": self.socket_path},
                    "secure_print": {}}
        if extras_first:
            # printer.cfg order decides which shutdown handler runs first.
            sections = {k: sections[k] for k in (
                "encrypted_file_bridge", "secure_print", "virtual_sdcard")}
        self.make_printer(model, sections)
        # The toolhead "fills up" past 60 kB, so however much one reactor
        # pass runs (a loaded machine runs more), the print is still under
        # way when it is shut down.
        self.vsd.positions = _HoldMovesPast(self.vsd, 60000)
        self.daemon.wait("connected", self.pump)
        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="s1")
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.run_until(lambda: self.vsd.file_position > 60000,
                       "the print to be well under way")
        self.assertTrue(self.vsd.is_active())
        self.assertEqual(len(memfds()), 1, "the job's memfd is not open")

    def shutdown_midway(self, model, extras_first=False):
        self.print_until_midway(model, extras_first)
        self.printer.shutdown("MCU 'mcu' shutdown: Timer too close")
        self.vsd.positions.release()  # what follows a shutdown runs freely
        for _ in range(5):  # master logs from a reactor callback
            self.printer.reactor.run_once(0)
        # The held work timer wakes a moment later and meets the guard.
        self.run_until(lambda: self.print_state()["state"] != "printing",
                       "virtual_sdcard to stop after the shutdown")
        log = self.klippy_log()
        self.assertIn("virtual_sdcard shutdown read", log,
                      "the fake did not attempt the dump")
        self.assertIn("LMNT: the job's G-code is not read after a shutdown",
                      log)
        self.assertNotIn("Upcoming (", log)
        leaked = [l for l in job_lines(fixture(CUBE)) if l in log]
        self.assertEqual(leaked, [], "job G-code in klippy.log")
        # The memfd is released at the shutdown, not at FIRMWARE_RESTART.
        self.assertEqual(memfds(), [], "the job's memfd is still open")
        sp = self.printer.lookup_object("secure_print")
        status = sp.get_status(self.printer.reactor.monotonic())
        self.assertTrue(status["file_released"])
        self.assertFalse(status["printing_lmnt_job"])
        self.assertEqual(self.print_state()["state"], "paused")
        state = self.wait_status(lambda s: s["klippy"]["state"] == "shutdown",
                                 "shutdown status")
        self.assertEqual(state["print_stats"]["filename"], "virtual_s1.gcode")

    def test_m112_on_master_while_executor_reads(self):
        self.print_until_midway("master-2026")
        self.printer.shutdown("Shutdown due to M112 command")
        self.vsd.positions.release()
        for _ in range(5):
            self.printer.reactor.run_once(0)
        self.assertEqual([l for l in job_lines(fixture(CUBE))
                          if l in self.klippy_log()], [])
        self.assertEqual(memfds(), [])

    def dump_local_file(self, model):
        # The control: the same fake leaks a plain local file's G-code,
        # exactly as Klipper does, so the tests above prove something.
        self.make_printer(model)
        shutil.copy(fixture(CUBE), os.path.join(self.gcodes, "cube.gcode"))
        self.printer.gcode.run_script("SDCARD_PRINT_FILE FILENAME=cube.gcode")
        self.run_until(lambda: self.vsd.file_position > 60000,
                       "the local print to be under way")
        self.printer.shutdown("MCU 'mcu' shutdown: Timer too close")
        for _ in range(5):
            self.printer.reactor.run_once(0)
        log = self.klippy_log()
        self.assertIn("Upcoming (", log)
        self.assertTrue(any(l in log for l in job_lines(fixture(CUBE))))
        self.vsd.current_file.close()  # Klipper holds it until a restart


def _name(model):
    return model.replace(".", "_").replace("-", "_")


for _model in MODELS:
    setattr(ShutdownLeavesNoPlaintext, "test_shutdown_" + _name(_model),
            lambda self, m=_model: self.shutdown_midway(m))
    setattr(ShutdownLeavesNoPlaintext, "test_control_local_file_" +
            _name(_model), lambda self, m=_model: self.dump_local_file(m))
for _model in ("v0.12", "master-2026"):
    setattr(ShutdownLeavesNoPlaintext,
            "test_shutdown_extras_before_virtual_sdcard_" + _name(_model),
            lambda self, m=_model: self.shutdown_midway(m, extras_first=True))

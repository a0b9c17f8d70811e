"""The extras print lmntd's memfd on every modelled Klipper version, with
the real lmntd bridge server (Go) on the other end of the socket."""
import os

from .bridge_harness import fixture
from .fakeklipper.printer import MODELS
from .rig import RigTestCase, open_fds

CUBE = "prusaslicer_cube20_pla_0.20mm.gcode"


class PrintOnEveryVersion(RigTestCase):
    def print_cube(self, model):
        with open(fixture(CUBE), "rb") as f:
            source = f.read()
        printer, hello = self.connect(model)
        m = MODELS[model]
        self.assertEqual(hello["extra_version"], "1.0.0")
        self.assertEqual(hello["klipper"]["version"], m.software_version)
        self.assertEqual(hello["klipper"]["flavour"],
                         "kalico" if m.kalico else "klipper")
        features = hello["klipper"].get("features") or []
        self.assertEqual("executor" in features, m.executor)
        self.assertEqual("byte_positions" in features, m.byte_positions)
        self.assertEqual("assert_no_pause" in features, m.assert_no_pause)
        self.assertEqual(hello["sections"],
                         ["encrypted_file_bridge", "secure_print"])
        self.assertEqual(hello["config_file"],
                         "/home/pi/printer_data/config/printer.cfg")

        self.daemon.send(cmd="print", file=fixture(CUBE), job_id="j1",
                         metadata={"total_layer": 100})
        result = self.daemon.wait("result", self.pump)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["job_id"], "j1")
        # Loaded and started; TOTAL_LAYER applied after set_current_file's
        # reset, so it is there while printing.
        state = self.print_state()
        self.assertEqual(state["filename"], "virtual_j1.gcode")
        self.assertEqual(state["info"]["total_layer"], 100)
        self.assertIn("File opened:virtual_j1.gcode Size:%d" % len(source),
                      self.console())
        self.assertIn("File selected", self.console())

        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "the print to complete")
        read = "".join(self.vsd.read_log).encode("utf-8")
        self.assertEqual(len(read), len(source))
        self.assertEqual(read, source, "virtual_sdcard read other bytes")
        self.assertEqual(self.vsd.lines_run,
                         source.decode().split("\n")[:-1])
        self.assertEqual(self.vsd.file_position, len(source))
        self.assertEqual(self.print_state()["info"]["total_layer"], 100,
                         "TOTAL_LAYER did not stick")
        self.assertIn("Done printing file", self.console())
        if m.executor:
            self.assertGreater(self.vsd.executor.worker_calls, 0,
                               "reads did not go through the executor")
        status = self.wait_status(
            lambda s: s["print_stats"]["state"] == "complete",
            "complete status")
        self.assertEqual(status["print_stats"]["filename"],
                         "virtual_j1.gcode")
        self.assertEqual(status["print_stats"]["info"]["total_layer"], 100)
        self.assertEqual(status["virtual_sdcard"]["file_size"], len(source))
        self.assertEqual(status["klippy"]["state"], "ready")
        self.assertFalse(status["virtual_sdcard"]["is_active"])

        self.shutdown_printer()
        self.assertEqual(self.printer.reactor.fd_count(), 0)
        self.assertEqual(open_fds(), self.fds_before, "fd leak")

    def test_v0_11(self):
        self.print_cube("v0.11")

    def test_v0_12(self):
        self.print_cube("v0.12")

    def test_v0_13(self):
        self.print_cube("v0.13")

    def test_master_2026(self):
        self.print_cube("master-2026")

    def test_kalico(self):
        self.print_cube("kalico")


class NonAsciiPositions(RigTestCase):
    """Bytes are exact everywhere; only the position accounting differs
    (v0.11/v0.12 count characters, v0.13+ bytes)."""

    TEXT = "; Würfel – 20 mm ✓\nG1 X1 Y1\n; Ende\n"

    def run_file(self, model):
        path = os.path.join(self.tmp, "umlaut.gcode")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.TEXT)
        self.connect(model)
        self.daemon.send(cmd="print", file=path, job_id="u1", metadata={})
        self.assertTrue(self.daemon.wait("result", self.pump)["ok"])
        self.run_until(lambda: self.print_state()["state"] == "complete",
                       "complete")
        self.assertEqual("".join(self.vsd.read_log), self.TEXT)
        self.assertEqual(self.vsd.file_size, len(self.TEXT.encode()))
        return self.vsd.file_position

    def test_v0_12_counts_characters(self):
        self.assertEqual(self.run_file("v0.12"), len(self.TEXT))

    def test_v0_13_counts_bytes(self):
        self.assertEqual(self.run_file("v0.13"), len(self.TEXT.encode()))

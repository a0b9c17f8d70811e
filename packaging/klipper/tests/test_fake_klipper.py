"""The fake Klipper reproduces the real behaviours the extras must cope
with; if it did not, the other tests would prove nothing."""
import unittest

from .fakeklipper.errors import GCodeDeadlock, KlipperViolation
from .fakeklipper.printer import make_printer


def printer(model):
    p = make_printer(model, {"virtual_sdcard": {"path": "/nonexistent"}})
    p.start()
    return p


class FakeKlipperFidelity(unittest.TestCase):
    def test_set_current_file_clears_layer_info(self):
        p = printer("v0.12")
        p.gcode.run_script("SET_PRINT_STATS_INFO TOTAL_LAYER=100")
        ps = p.lookup_object("print_stats")
        self.assertEqual(ps.get_status(0)["info"]["total_layer"], 100)
        ps.set_current_file("virtual_x.gcode")
        self.assertIsNone(ps.get_status(0)["info"]["total_layer"])

    def test_run_script_inside_a_command_is_a_deadlock(self):
        p = printer("v0.13")

        def bad(gcmd):
            p.gcode.run_script("M115")
        p.gcode.register_command("BAD", bad)
        with self.assertRaises(GCodeDeadlock):
            p.gcode.run_script("BAD")
        self.assertEqual(len(p.violations), 1)

    def test_kalico_interrupt_skips_the_mutex(self):
        p = printer("kalico")
        ran = []
        p.gcode.register_command("OUTER", lambda g: p.gcode.run_script(
            "MY_INTERRUPT_MACRO"))
        p.gcode.register_command("MY_INTERRUPT_MACRO",
                                 lambda g: ran.append(True))
        p.gcode.run_script("OUTER")
        self.assertEqual(ran, [True])

    def test_master_forbids_pausing_in_ready_handlers(self):
        p = make_printer("master-2026", {})
        p.register_event_handler("klippy:ready",
                                 lambda: p.gcode.run_script("M115"))
        with self.assertRaises(KlipperViolation):
            p.start()

    def test_kalico_module_paths(self):
        p = printer("kalico")
        self.assertEqual(type(p.lookup_object("virtual_sdcard")).__module__,
                         "klippy.extras.virtual_sdcard")
        p = printer("v0.11")
        self.assertEqual(type(p.lookup_object("virtual_sdcard")).__module__,
                         "extras.virtual_sdcard")

"""The README's macro panel, rendered the way Klipper's gcode_macro renders
a macro (klippy/extras/gcode_macro.py: a jinja2.Environment with '{%' '%}'
'{' '}' delimiters, `printer` giving each object's get_status(), and
action_respond_info), against the real extras' get_status()."""
import copy
import os
import re

import jinja2

from .rig import RigTestCase

README = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "README.md")


def readme_macros():
    """{name: gcode template} of the [gcode_macro] sections in README.md,
    with continuation lines stripped as Klipper's configparser does."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    macros = {}
    for block in re.findall(r"```ini\n(.*?)```", text, re.S):
        for name, body in re.findall(
                r"^\[gcode_macro (\w+)\]\n(.*?)(?=^\[|\Z)", block, re.S | re.M):
            gcode = body.split("gcode:", 1)[1]
            macros[name] = "\n".join(l.strip() for l in gcode.splitlines()
                                     if l.strip())
    return macros


class ReadmeMacroPanel(RigTestCase):
    def render(self, name):
        said = []
        printer = self.printer

        class Status:  # GetStatusWrapper
            def __getitem__(self, val):
                po = printer.lookup_object(str(val).strip(), None)
                if po is None or not hasattr(po, "get_status"):
                    raise KeyError(val)
                return copy.deepcopy(po.get_status(
                    printer.reactor.monotonic()))

        env = jinja2.Environment("{%", "%}", "{", "}")
        out = env.from_string(readme_macros()[name]).render({
            "printer": Status(),
            "action_respond_info": lambda msg: said.append(msg) or "",
        })
        return out.strip(), said

    def test_macros(self):
        self.assertLessEqual({"LMNT_STATUS", "LMNT_BED_CLEAR"},
                             set(readme_macros()))
        self.make_printer("v0.13")
        out, said = self.render("LMNT_STATUS")
        self.assertEqual(out, "")
        self.assertTrue(said[0].startswith("LMNT: lmntd is not connected"))

        self.daemon.wait("connected", self.pump)
        self.run_until(lambda: self.printer.lookup_object(
            "encrypted_file_bridge").is_connected(), "welcome")
        self.daemon.send(cmd="state", state={
            "pairing_code": "K7Q-2M9", "waiting_for_ready": True,
            "job": {"id": "m1", "title": "Benchy", "state": "accepted"}})
        self.run_until(lambda: self.render("LMNT_STATUS")[1] and "K7Q-2M9"
                       in self.render("LMNT_STATUS")[1][0], "the state")
        _, said = self.render("LMNT_STATUS")
        self.assertRegex(said[0], r"^LMNT: lmntd \S+; pairing code K7Q-2M9: "
                         r"enter it in the LMNT Marketplace; job Benchy "
                         r"\(accepted\); waiting for the bed")
        out, said = self.render("LMNT_BED_CLEAR")
        self.assertEqual((out, said), ("LMNT_READY", []))

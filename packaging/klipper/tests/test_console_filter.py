"""The extra's own refusal of console text that looks secret (defence in
depth behind the daemon, which never sends such text)."""
import unittest

from .fakeklipper.printer import load_extra

bridge = load_extra("extras.", "encrypted_file_bridge")


class ConsoleFilter(unittest.TestCase):
    SHOWN = [
        "LMNT: pairing code 4F7-K2Q",
        "LMNT: job received: virtual_0e9e04df-153a-4202-b4a9-dd3e5c6b26d5"
        ".gcode",
        "LMNT: downloading 40%",
        "LMNT: decrypting 90%",
        "LMNT: waiting for LMNT_READY: is the bed clear?",
        "LMNT: started Benchy_with_Supports_PLA_MK3S_2h13m.gcode",
        "LMNT: failed: nozzle 0.6 mm in the job, 0.4 mm on this printer",
        "LMNT: Würfel fertig ✓",
    ]
    REFUSED = {
        "LMNT: open http://192.168.1.215:8088/jobs": "URL",
        "LMNT: wss://cws.lmnt.market": "URL",
        "LMNT: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9": "web token",
        "LMNT: key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c1"
        "5b0f00a08": "hexadecimal",
        "LMNT: dek q83vEjRWeJq83vEjRWeJq83vEjRWeJ+/=": "base64",
        "LMNT: sig uaY3Am7CZ1-fbtTOh_60J-SFz_Ydu94iiu84oUhhS88": "base64",
        "job done": "LMNT:",
        "LMNT: two\nlines": "control",
        "LMNT: " + "x" * 600: "longer",
        None: "LMNT:",
    }

    def test_ordinary_lines_are_shown(self):
        for text in self.SHOWN:
            self.assertIsNone(bridge.console_text_refusal(text), text)

    def test_secret_looking_lines_are_refused(self):
        for text, why in self.REFUSED.items():
            refusal = bridge.console_text_refusal(text)
            self.assertIsNotNone(refusal, text)
            self.assertIn(why, refusal, text)

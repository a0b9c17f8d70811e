"""Failures of the fake Klipper itself.

KlipperViolation derives from BaseException on purpose: code under test
that catches Exception (as Klipper extras should) cannot swallow it, so a
misuse that would hang or crash a real Klipper fails the test instead.
"""


class KlipperViolation(BaseException):
    """The code under test did something that breaks a real Klipper."""


class GCodeDeadlock(KlipperViolation):
    """gcode.run_script while the G-code mutex is held: a real Klipper
    would wait forever for its own mutex."""


class CommandError(Exception):
    """Klipper's printer.command_error (gcode.error)."""

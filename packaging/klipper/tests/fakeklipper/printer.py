"""The Printer object (klippy/klippy.py) and the Klipper versions modelled.

A FakePrinter loads the real extras from packaging/klipper under the module
name the modelled Klipper would use (extras.<name>, or klippy.extras.<name>
on Kalico), runs klippy:connect / klippy:ready like Klipper's _connect, and
sends klippy:shutdown / klippy:disconnect on request.
"""
import collections
import importlib.util
import logging
import os
import sys

from .errors import CommandError
from .gcode import FakeGCode
from .reactor import FakeReactor, MasterReactor
from .sdcard import PauseResume, PrintStats, make_virtual_sdcard

EXTRAS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

Model = collections.namedtuple("Model", [
    "name", "software_version", "byte_positions", "executor",
    "analyze_shutdown", "assert_no_pause", "kalico", "module_prefix"])

# What differs between the supported versions (shared/spec/klipper.md).
MODELS = collections.OrderedDict((m.name, m) for m in [
    Model("v0.11", "v0.11.0-271-g5f990f93", False, False, False, False,
          False, "extras."),
    Model("v0.12", "v0.12.0-114-gf7a4f1ab", False, False, False, False,
          False, "extras."),
    Model("v0.13", "v0.13.0-41-g1f1e2d3c", True, False, False, False,
          False, "extras."),
    Model("master-2026", "v0.13.0-312-g0a1b2c3d", True, True, True, True,
          False, "extras."),
    Model("kalico", "v2026.07.00-0-g8d5e6f70", True, False, False, False,
          True, "klippy.extras."),
])


class ConfigError(Exception):
    pass


class FakeConfig:
    _sentinel = object()

    def __init__(self, printer, name, options):
        self.printer = printer
        self.name = name
        self.options = dict(options or {})

    def get_printer(self):
        return self.printer

    def get_name(self):
        return self.name

    def get(self, option, default=_sentinel):
        if option in self.options:
            return str(self.options[option])
        if default is self._sentinel:
            raise ConfigError("Option '%s' in section '%s' must be specified"
                              % (option, self.name))
        return default

    def getfloat(self, option, default=_sentinel, **kw):
        value = self.get(option, default)
        return value if value is None else float(value)

    def getint(self, option, default=_sentinel, **kw):
        value = self.get(option, default)
        return value if value is None else int(value)


def load_extra(module_prefix, name):
    """Import packaging/klipper/<name>.py as Klipper would find it in
    klippy/extras (a symlink there): extras.<name> or klippy.extras.<name>."""
    module_name = module_prefix + name
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            module_name, os.path.join(EXTRAS_DIR, name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


class FakePrinter:
    config_error = ConfigError
    command_error = CommandError
    _sentinel = object()

    def __init__(self, model_name, sections, sdcard_dir=None,
                 config_file="/home/pi/printer_data/config/printer.cfg",
                 readme_macro=False):
        """sections: ordered {section name: {option: value}} of printer.cfg
        (only the ones this fake knows: virtual_sdcard and the extras)."""
        self.model = MODELS[model_name]
        self.reactor = (MasterReactor() if self.model.assert_no_pause
                        else FakeReactor())
        self.violations = []
        self.objects = collections.OrderedDict()
        self.event_handlers = {}
        self.state_message = ("Printer is not ready", "startup")
        self.in_shutdown_state = False
        self.readme_macro = readme_macro
        self.disconnected = False
        self.start_args = {"config_file": config_file,
                           "software_version": self.model.software_version,
                           "start_reason": "startup"}
        self.gcode = FakeGCode(self, interrupt_skips_mutex=self.model.kalico)
        self.objects["gcode"] = self.gcode
        self.objects["print_stats"] = PrintStats(
            self, emit_events=self.model.kalico)
        self.objects["pause_resume"] = PauseResume(self)
        for name, options in sections.items():
            if name == "virtual_sdcard":
                cls = make_virtual_sdcard(self.model)
                self.objects[name] = cls(self, options.get("path",
                                                           sdcard_dir))
            elif name in ("encrypted_file_bridge", "secure_print"):
                module = load_extra(self.model.module_prefix, name)
                self.objects[name] = module.load_config(
                    FakeConfig(self, name, options))
            else:
                raise ConfigError("fake Klipper has no section %s" % name)

    # ---- Printer API ---------------------------------------------------------
    def get_reactor(self):
        return self.reactor

    def get_start_args(self):
        return self.start_args

    def get_state_message(self):
        return self.state_message

    def is_shutdown(self):
        return self.in_shutdown_state

    def lookup_object(self, name, default=_sentinel):
        if name in self.objects:
            return self.objects[name]
        if default is self._sentinel:
            raise ConfigError("Unknown config object '%s'" % (name,))
        return default

    def register_event_handler(self, event, callback):
        self.event_handlers.setdefault(event, []).append(callback)

    def send_event(self, event, *params):
        return [cb(*params) for cb in self.event_handlers.get(event, [])]

    def _send_no_pause_event(self, event, *params):
        if self.model.assert_no_pause:
            with self.reactor.assert_no_pause():
                return self.send_event(event, *params)
        return self.send_event(event, *params)

    # ---- lifecycle, driven by the test ----------------------------------------
    def start(self):
        """Klipper's _connect: identify MCUs, connect, then ready."""
        self.send_event("klippy:mcu_identify")
        self.send_event("klippy:connect")
        if self.readme_macro:
            self._install_readme_macro()
        self.state_message = ("Printer is ready", "ready")
        self._send_no_pause_event("klippy:ready")

    def shutdown(self, message, details=None):
        """Klipper's invoke_shutdown (M112, an MCU error): the printer is
        marked shut down first, then every klippy:shutdown handler runs (an
        exception is logged and the next runs); after v0.13 the
        klippy:analyze_shutdown handlers follow."""
        if self.in_shutdown_state:
            return
        logging.error("Transition to shutdown state: %s", message)
        self.in_shutdown_state = True
        self.state_message = (message, "shutdown")
        events = [("klippy:shutdown", ())]
        if self.model.analyze_shutdown:
            events.append(("klippy:analyze_shutdown", (message,
                                                       details or {})))
        for event, params in events:
            for cb in self.event_handlers.get(event, []):
                try:
                    if self.model.assert_no_pause:
                        with self.reactor.assert_no_pause():
                            cb(*params)
                    else:
                        cb(*params)
                except Exception:
                    logging.exception("Exception during shutdown handler")

    def disconnect(self):
        """RESTART / FIRMWARE_RESTART: the reactor has stopped, then
        klippy:disconnect runs."""
        if not self.disconnected:
            self.disconnected = True
            self.send_event("klippy:disconnect")

    def _install_readme_macro(self):
        # The README's macro:
        #   [gcode_macro SDCARD_PRINT_FILE]
        #   rename_existing: BASE_SDCARD_PRINT_FILE
        #   gcode:
        #     {% if params.FILENAME is defined and
        #           params.FILENAME.startswith('virtual_') %}
        #       SET_GCODE_FD FILENAME="{params.FILENAME}"
        #     {% else %}
        #       BASE_SDCARD_PRINT_FILE {rawparams}
        #     {% endif %}
        self.gcode.rename_command("SDCARD_PRINT_FILE",
                                  "BASE_SDCARD_PRINT_FILE")

        def macro(gcmd):
            filename = gcmd.get_command_parameters().get("FILENAME")
            if filename is not None and filename.startswith("virtual_"):
                script = 'SET_GCODE_FD FILENAME="%s"' % (filename,)
            else:
                script = ("BASE_SDCARD_PRINT_FILE "
                          + gcmd.get_raw_command_parameters())
            self.gcode.run_script_from_command(script)
        self.gcode.register_command("SDCARD_PRINT_FILE", macro)


class KalicoPrinter(FakePrinter):
    """Kalico runs klippy as a package: its objects live in klippy.*."""


KalicoPrinter.__module__ = "klippy.printer"


def make_printer(model_name, sections, **kw):
    cls = KalicoPrinter if MODELS[model_name].kalico else FakePrinter
    return cls(model_name, sections, **kw)

"""Klipper's G-code dispatcher (klippy/gcode.py), reduced to what the extras
and virtual_sdcard touch: commands, the non-re-entrant mutex, run_script,
run_script_from_command, respond_info/respond_raw, extended parameters."""
import re
import shlex

from .errors import CommandError, GCodeDeadlock, KlipperViolation


class GCodeMutex:
    """Klipper's reactor mutex: not re-entrant. Taking it while it is held
    by the same call chain is the deadlock a real Klipper would hang in."""

    def __init__(self, printer):
        self.printer = printer
        self.locked = False

    def test(self):
        return self.locked

    def __enter__(self):
        if self.locked:
            violation = GCodeDeadlock(
                "gcode.run_script while the G-code mutex is held (use "
                "run_script_from_command inside a command handler)")
            self.printer.violations.append(violation)
            raise violation
        self.locked = True

    def __exit__(self, *exc):
        self.locked = False


class GCodeCommand:
    def __init__(self, gcode, command, commandline, params):
        self._gcode = gcode
        self._command = command
        self._commandline = commandline
        self._params = params
        self.error = CommandError

    def get_command(self):
        return self._command

    def get_commandline(self):
        return self._commandline

    def get_command_parameters(self):
        return dict(self._params)

    def get_raw_command_parameters(self):
        # rawparams (v0.11+): everything after the command name.
        line = self._commandline.strip()
        return line[len(self._command):].strip() if line.upper().startswith(
            self._command) else ""

    _sentinel = object()

    def get(self, name, default=_sentinel, parser=str, minval=None,
            maxval=None):
        value = self._params.get(name)
        if value is None:
            if default is self._sentinel:
                raise self.error("Error on '%s': missing %s"
                                 % (self._commandline, name))
            return default
        try:
            value = parser(value)
        except (ValueError, TypeError):
            raise self.error("Error on '%s': unable to parse %s"
                             % (self._commandline, value))
        if minval is not None and value < minval:
            raise self.error("Error on '%s': %s must have minimum of %s"
                             % (self._commandline, name, minval))
        if maxval is not None and value > maxval:
            raise self.error("Error on '%s': %s must have maximum of %s"
                             % (self._commandline, name, maxval))
        return value

    def get_int(self, name, default=_sentinel, minval=None, maxval=None):
        return self.get(name, default, parser=int, minval=minval,
                        maxval=maxval)

    def get_float(self, name, default=_sentinel, minval=None, maxval=None):
        return self.get(name, default, parser=float, minval=minval,
                        maxval=maxval)

    def respond_info(self, msg, log=True):
        self._gcode.respond_info(msg, log)

    def respond_raw(self, msg):
        self._gcode.respond_raw(msg)


class FakeGCode:
    error = CommandError

    # Same parsing as Klipper v0.11+ (gcode.py _get_extended_params).
    _extended_r = re.compile(
        r'^\s*(?:N[0-9]+\s*)?'
        r'(?P<cmd>[a-zA-Z_][a-zA-Z0-9_]+)(?:\s+|$)'
        r'(?P<args>[^#*;]*?)'
        r'\s*(?:[#*;].*)?$')
    _traditional_r = re.compile(r'^[A-Z][0-9]+(\.[0-9]+)?$')

    def __init__(self, printer, interrupt_skips_mutex=False):
        self.printer = printer
        self.mutex = GCodeMutex(printer)
        self.handlers = {}
        self.when_not_ready = set()
        self.console = []          # every line a client would see
        self.dispatched = []       # traditional G-code lines (moves etc.)
        self.interrupt_skips_mutex = interrupt_skips_mutex

    def get_mutex(self):
        return self.mutex

    def register_command(self, cmd, func, when_not_ready=False, desc=None):
        cmd = cmd.upper()
        if func is None:
            self.handlers.pop(cmd, None)
            return None
        if cmd in self.handlers:
            raise self.printer.config_error(
                "gcode command %s already registered" % (cmd,))
        self.handlers[cmd] = func
        if when_not_ready:
            self.when_not_ready.add(cmd)
        return None

    def rename_command(self, old, new):
        """What gcode_macro's rename_existing does at klippy:connect."""
        self.handlers[new.upper()] = self.handlers.pop(old.upper())

    # ---- running scripts ---------------------------------------------------
    def run_script(self, script):
        if self.printer.reactor.in_no_pause_section():
            violation = KlipperViolation(
                "gcode.run_script inside a no-pause section (a klippy:ready "
                "or klippy:shutdown handler on Klipper master)")
            self.printer.violations.append(violation)
            raise violation
        if self.interrupt_skips_mutex and "INTERRUPT" in script:
            self._process(script.split('\n'))
            return
        with self.mutex:
            self._process(script.split('\n'))

    def run_script_from_command(self, script):
        self._process(script.split('\n'))

    def _process(self, lines):
        for origline in lines:
            line = origline.strip()
            cpos = line.find(';')
            if cpos >= 0:
                line = line[:cpos]
            if not line.strip():
                continue
            cmd = line.split()[0].upper()
            if self._traditional_r.match(cmd):
                self.dispatched.append(origline)
                handler = self.handlers.get(cmd)
                if handler is not None:
                    handler(GCodeCommand(self, cmd, origline, {}))
                continue
            handler = self.handlers.get(cmd)
            if handler is None:
                self.respond_info('Unknown command:"%s"' % (cmd,))
                continue
            state = self.printer.get_state_message()
            if state[1] != "ready" and cmd not in self.when_not_ready:
                self._respond_error(state[0])
                raise CommandError(state[0])
            gcmd = self._extended(cmd, line, origline)
            try:
                handler(gcmd)
            except CommandError as e:
                self._respond_error(str(e))
                raise

    def _extended(self, cmd, line, origline):
        m = self._extended_r.match(line)
        if m is None:
            raise CommandError("Malformed command '%s'" % (line,))
        try:
            params = {}
            for earg in shlex.split(m.group('args')):
                key, value = earg.split('=', 1)
                params[key.upper()] = value
        except ValueError:
            raise CommandError("Malformed command '%s'" % (line,))
        return GCodeCommand(self, cmd, origline, params)

    # ---- responses -----------------------------------------------------------
    def respond_raw(self, msg):
        self.console.append(msg)

    def respond_info(self, msg, log=True):
        lines = [l.strip() for l in msg.strip().split('\n')]
        self.respond_raw("// " + "\n// ".join(lines))

    def _respond_error(self, msg):
        lines = msg.strip().split('\n')
        if len(lines) > 1:
            self.respond_info("\n".join(lines), log=False)
        self.respond_raw('!! %s' % (lines[0].strip(),))

"""print_stats, virtual_sdcard, pause_resume and Klipper master's executor,
modelled on Klipper's klippy/extras files (v0.11 to master-2026, Kalico)
as described in lmntd's shared/spec/klipper.md.

virtual_sdcard's work_handler is a greenlet that pauses in Klipper; here it
is the same loop written as a timer that re-arms itself where Klipper would
pause: after each 8 KiB read (pause(NOW)), while another command holds the
G-code mutex, and while the fake toolhead queue is full (hold_moves).
"""
import io
import logging
import os
import queue
import sys
import threading
import types

from .errors import KlipperViolation


class PrintStats:
    """klippy/extras/print_stats.py (v0.11+)."""

    def __init__(self, printer, emit_events=False):
        self.printer = printer
        self.reactor = printer.reactor
        self.emit_events = emit_events  # Kalico sends print_stats:* events
        self.reset()
        printer.gcode.register_command("SET_PRINT_STATS_INFO",
                                       self.cmd_SET_PRINT_STATS_INFO)

    def _note_state(self, state):
        self.state = state
        if self.emit_events:
            self.printer.send_event("print_stats:" + state)

    def reset(self):
        self.filename = self.error_message = ""
        self.state = "standby"
        self.prev_pause_duration = 0.
        self.print_start_time = self.last_pause_time = None
        self.filament_used = self.total_duration = 0.
        self.info_total_layer = None
        self.info_current_layer = None

    def set_current_file(self, filename):
        self.reset()
        self.filename = filename

    def note_start(self):
        curtime = self.reactor.monotonic()
        if self.print_start_time is None:
            self.print_start_time = curtime
        elif self.last_pause_time is not None:
            self.prev_pause_duration += curtime - self.last_pause_time
            self.last_pause_time = None
        self.error_message = ""
        self._note_state("printing")

    def note_pause(self):
        if self.last_pause_time is None:
            self.last_pause_time = self.reactor.monotonic()
        if self.state != "error":
            self._note_state("paused")

    def note_complete(self):
        self._note_finish("complete")

    def note_error(self, message):
        self._note_finish("error", message)

    def note_cancel(self):
        self._note_finish("cancelled")

    def _note_finish(self, state, error_message=""):
        if self.print_start_time is None:
            return
        self.error_message = error_message
        self.total_duration = (self.reactor.monotonic()
                               - self.print_start_time)
        self._note_state(state)

    def cmd_SET_PRINT_STATS_INFO(self, gcmd):
        total_layer = gcmd.get_int("TOTAL_LAYER", self.info_total_layer,
                                   minval=0)
        current_layer = gcmd.get_int("CURRENT_LAYER",
                                     self.info_current_layer, minval=0)
        if total_layer == 0:
            self.info_total_layer = None
            self.info_current_layer = None
        elif total_layer != self.info_total_layer:
            self.info_total_layer = total_layer
            self.info_current_layer = 0
        if (self.info_total_layer is not None and current_layer is not None
                and current_layer != self.info_current_layer):
            self.info_current_layer = min(current_layer,
                                          self.info_total_layer)

    def get_status(self, eventtime):
        time_paused = self.prev_pause_duration
        total = self.total_duration
        if self.print_start_time is not None and self.state in (
                "printing", "paused"):
            total = eventtime - self.print_start_time
            if self.last_pause_time is not None:
                time_paused += eventtime - self.last_pause_time
        return {
            "filename": self.filename,
            "total_duration": total,
            "print_duration": max(0., total - time_paused),
            "filament_used": self.filament_used,
            "state": self.state,
            "message": self.error_message,
            "info": {"total_layer": self.info_total_layer,
                     "current_layer": self.info_current_layer},
        }


class Executor:
    """Klipper master's aio executor (klippy/extras/aio_executor.py): calls
    run on one worker thread; the caller waits for the result."""

    class _Sentinel:
        pass

    def __init__(self):
        self._queue = queue.Queue()
        self._wait_for_work = True
        self.worker_calls = 0          # calls that really ran on the thread
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name="virtual_sdcard")
        self._thread.start()

    def _main(self):
        while True:
            item = self._queue.get()
            if item is self._Sentinel:
                return
            done, box, fn, args, kwargs = item
            try:
                box.append((fn(*args, **kwargs), None))
            except Exception as e:
                box.append((None, e))
            self.worker_calls += 1
            done.set()

    def submit(self, fn, *args, **kwargs):
        if not self._wait_for_work:
            return fn(*args, **kwargs)
        done, box = threading.Event(), []
        self._queue.put_nowait((done, box, fn, args, kwargs))
        if not done.wait(10.):
            raise KlipperViolation("executor call did not finish")
        result, exc = box[0]
        if exc is not None:
            raise exc
        return result

    def wrap_obj(self, obj):
        return WrapperAIO(self, obj)

    def join(self):
        if self._wait_for_work:
            self._wait_for_work = False
            self._queue.put_nowait(self._Sentinel)
            self._thread.join()


class WrapperAIO:
    """Proxies every method call of the wrapped object to the executor."""

    def __init__(self, executor, obj):
        self.object = obj
        self.executor = executor

    def __getattr__(self, name):
        attr = getattr(self.object, name)
        if not callable(attr):
            return attr

        def proxy(*args, **kwargs):
            return self.executor.submit(attr, *args, **kwargs)
        return proxy


class VirtualSD:
    """klippy/extras/virtual_sdcard.py; the class attributes below are set
    per modelled version by make_virtual_sdcard()."""

    byte_positions = False     # v0.13+, Kalico: len(line.encode()) + 1
    uses_executor = False      # master-2026
    defers_shutdown_dump = False  # after v0.13: klippy:analyze_shutdown

    def __init__(self, printer, sdcard_dirname):
        self.printer = printer
        self.reactor = printer.reactor
        self.gcode = printer.gcode
        self.sdcard_dirname = sdcard_dirname
        self.current_file = None
        self.file_position = self.file_size = 0
        self.print_stats = printer.lookup_object("print_stats")
        self.must_pause_work = self.cmd_from_sd = False
        self.next_file_position = 0
        self.work_timer = None
        self._work_started = False
        self._error_message = None
        self.on_error_gcode = "TURN_OFF_HEATERS"
        # The shutdown dump: where each version does it.
        if self.defers_shutdown_dump:
            printer.register_event_handler("klippy:analyze_shutdown",
                                           self._handle_analyze_shutdown)
        else:
            printer.register_event_handler("klippy:shutdown",
                                           self.handle_shutdown)
        if self.uses_executor:
            self.executor = Executor()
            printer.register_event_handler("klippy:disconnect",
                                           self.executor.join)
        # What the tests inspect.
        self.read_log = []          # every string read from current_file
        self.lines_run = []         # every line dispatched from the file
        self.positions = []         # file_position after each line
        self.hold_moves = False     # toolhead queue full: no progress
        self.lines_per_wake = 400
        for cmd in ["M23", "M24", "M25", "M26"]:
            self.gcode.register_command(cmd, getattr(self, "cmd_" + cmd))
        self.gcode.register_command("SDCARD_PRINT_FILE",
                                    self.cmd_SDCARD_PRINT_FILE)
        self.gcode.register_command("SDCARD_RESET_FILE",
                                    self.cmd_SDCARD_RESET_FILE)

    # ---- the shutdown dump into klippy.log ------------------------------------
    # v0.11 to v0.13 and Kalico: handle_shutdown on klippy:shutdown reads
    # the file around the position and logs it. After v0.13 (master, see
    # DeferredShutdownDump) the same reads and the same log line run from a
    # reactor callback.
    def handle_shutdown(self):
        if self.work_timer is not None:
            self.must_pause_work = True
            self._log_debug_data(self.current_file, self.file_position)

    @staticmethod
    def _log_debug_data(current_file, file_position):
        try:
            readpos = max(file_position - 1024, 0)
            readcount = file_position - readpos
            current_file.seek(readpos)
            data = current_file.read(readcount + 128)
        except:  # noqa: E722 -- Klipper's bare except, on purpose
            logging.exception("virtual_sdcard shutdown read")
            return
        logging.info("Virtual sdcard (%d): %s\nUpcoming (%d): %s",
                     readpos, repr(data[:readcount]),
                     file_position, repr(data[readcount:]))

    # ---- the public-ish surface ----------------------------------------------
    def get_status(self, eventtime):
        return {
            "file_path": self.file_path(),
            "progress": self.progress(),
            "is_active": self.is_active(),
            "file_position": self.file_position,
            "file_size": self.file_size,
        }

    def file_path(self):
        if self.current_file:
            return self.current_file.name
        return None

    def progress(self):
        if self.file_size:
            return float(self.file_position) / self.file_size
        return 0.

    def is_active(self):
        return self.work_timer is not None

    def do_pause(self):
        if self.work_timer is not None:
            self.must_pause_work = True
            if not self.cmd_from_sd:
                # Klipper waits here until the work greenlet has exited its
                # loop; the fake's work loop is not running now, so it
                # exits at once.
                self._exit_work()

    def do_resume(self):
        if self.work_timer is not None:
            raise self.gcode.error("SD busy")
        self.must_pause_work = False
        self._work_started = False
        self._error_message = None
        self.work_timer = self.reactor.register_timer(self.work_handler,
                                                      self.reactor.NOW)

    def do_cancel(self):
        if self.current_file is not None:
            self.do_pause()
            self.current_file.close()
            self.current_file = None
            self.print_stats.note_cancel()
        self.file_position = self.file_size = 0

    def _reset_file(self):
        if self.current_file is not None:
            self.do_pause()
            self.current_file.close()
            self.current_file = None
        self.file_position = self.file_size = 0
        self.print_stats.reset()
        self.printer.send_event("virtual_sdcard:reset_file")

    # ---- G-code ----------------------------------------------------------------
    def cmd_SDCARD_RESET_FILE(self, gcmd):
        if self.cmd_from_sd:
            raise gcmd.error("SDCARD_RESET_FILE cannot be run from the sdcard")
        self._reset_file()

    def cmd_SDCARD_PRINT_FILE(self, gcmd):
        if self.work_timer is not None:
            raise gcmd.error("SD busy")
        self._reset_file()
        filename = gcmd.get("FILENAME")
        if filename[0] == '/':
            filename = filename[1:]
        self._load_file(gcmd, filename)
        self.do_resume()

    def _load_file(self, gcmd, filename):
        fname = os.path.join(self.sdcard_dirname, filename)
        try:
            if self.uses_executor:
                f = self.executor.submit(io.open, fname, 'rb', buffering=0)
                f = io.BufferedReader(self.executor.wrap_obj(f))
                f.seek(0, os.SEEK_END)
                fsize = f.tell()
                f.seek(0)
                f = io.TextIOWrapper(f, newline='')
            else:
                f = io.open(fname, 'r', newline='')
                f.seek(0, os.SEEK_END)
                fsize = f.tell()
                f.seek(0)
        except Exception:
            raise gcmd.error("Unable to open file")
        gcmd.respond_raw("File opened:%s Size:%d" % (filename, fsize))
        gcmd.respond_raw("File selected")
        self.current_file = f
        self.file_position = 0
        self.file_size = fsize
        self.print_stats.set_current_file(filename)

    def cmd_M23(self, gcmd):
        if self.work_timer is not None:
            raise gcmd.error("SD busy")
        self._reset_file()
        self._load_file(gcmd, gcmd.get_raw_command_parameters().strip())

    def cmd_M24(self, gcmd):
        self.do_resume()

    def cmd_M25(self, gcmd):
        self.do_pause()

    def cmd_M26(self, gcmd):
        if self.work_timer is not None:
            raise gcmd.error("SD busy")
        self.file_position = gcmd.get_int("S", minval=0)

    # ---- the work loop -----------------------------------------------------------
    def work_handler(self, eventtime):
        if not self._work_started:
            self._work_started = True
            try:
                self.current_file.seek(self.file_position)
            except Exception:
                logging.exception("virtual_sdcard seek")
                return self._exit_work()
            self.print_stats.note_start()
            self._partial_input = ""
            self._lines = []
            self._error_message = None
        budget = self.lines_per_wake
        while not self.must_pause_work:
            if not self._lines:
                try:
                    data = self.current_file.read(8192)
                except:  # noqa: E722 -- Klipper's bare except, on purpose
                    # This is the silent stall of invalid UTF-8: logged,
                    # then the print just ends up "paused", no message.
                    logging.exception("virtual_sdcard read")
                    break
                self.read_log.append(data)
                if not data:
                    self.current_file.close()
                    self.current_file = None
                    self.gcode.respond_raw("Done printing file")
                    break
                lines = data.split('\n')
                lines[0] = self._partial_input + lines[0]
                self._partial_input = lines.pop()
                lines.reverse()
                self._lines = lines
                return self.reactor.NOW  # reactor.pause(NOW)
            if self.gcode.mutex.test():
                return self.reactor.monotonic() + 0.1
            if self.hold_moves:
                return self.reactor.monotonic() + 0.01
            if budget <= 0:
                return self.reactor.NOW
            budget -= 1
            self.cmd_from_sd = True
            line = self._lines.pop()
            if self.byte_positions:
                next_file_position = self.file_position + len(
                    line.encode()) + 1
            else:
                next_file_position = self.file_position + len(line) + 1
            self.next_file_position = next_file_position
            self.lines_run.append(line)
            try:
                self.gcode.run_script(line)
            except self.gcode.error as e:
                self._error_message = str(e)
                break
            self.cmd_from_sd = False
            self.file_position = self.next_file_position
            self.positions.append(self.file_position)
            if self.next_file_position != next_file_position:
                try:
                    self.current_file.seek(self.file_position)
                except Exception:
                    return self._exit_work()
                self._lines = []
                self._partial_input = ""
        return self._exit_work()

    def _exit_work(self):
        if self.work_timer is not None:
            self.reactor.unregister_timer(self.work_timer)
        self.work_timer = None
        self.cmd_from_sd = False
        if self._error_message is not None:
            self.print_stats.note_error(self._error_message)
        elif self.current_file is not None:
            self.print_stats.note_pause()
        else:
            self.print_stats.note_complete()
        return self.reactor.NEVER


class DeferredShutdownDump:
    """Klipper after v0.13: _handle_analyze_shutdown captures file and
    position, then logs the dump from a reactor callback."""

    def _handle_analyze_shutdown(self, msg, details):
        if self.work_timer is None:
            return
        file_position = self.file_position
        current_file = self.current_file
        self.must_pause_work = True
        self.reactor.register_callback(
            lambda eventtime: self._log_debug_data(current_file,
                                                   file_position))


class PauseResume:
    """klippy/extras/pause_resume.py: PAUSE, RESUME, CANCEL_PRINT."""

    def __init__(self, printer):
        self.printer = printer
        self.gcode = printer.gcode
        self.is_paused = False
        self.sd_paused = False
        self.pause_command_sent = False
        for cmd in ("PAUSE", "RESUME", "CANCEL_PRINT", "CLEAR_PAUSE"):
            self.gcode.register_command(cmd, getattr(self, "cmd_" + cmd))

    def _vsd(self):
        return self.printer.lookup_object("virtual_sdcard", None)

    def cmd_PAUSE(self, gcmd):
        if self.is_paused:
            gcmd.respond_info("Print already paused")
            return
        vsd = self._vsd()
        if vsd is not None and vsd.is_active():
            self.sd_paused = True
            vsd.do_pause()
        else:
            self.sd_paused = False
            gcmd.respond_info("action:paused")
        self.is_paused = True

    def cmd_RESUME(self, gcmd):
        if not self.is_paused:
            gcmd.respond_info("Print is not paused, resume aborted")
            return
        if self.sd_paused:
            self._vsd().do_resume()
            self.sd_paused = False
        else:
            gcmd.respond_info("action:resumed")
        self.is_paused = False

    def cmd_CLEAR_PAUSE(self, gcmd):
        self.is_paused = self.sd_paused = False

    def cmd_CANCEL_PRINT(self, gcmd):
        vsd = self._vsd()
        if vsd is not None and (vsd.is_active() or self.sd_paused):
            vsd.do_cancel()
        else:
            gcmd.respond_info("action:cancel")
        self.cmd_CLEAR_PAUSE(gcmd)


def make_virtual_sdcard(model):
    """The VirtualSD class as the modelled version defines it, in a module
    named like the real one (extras.virtual_sdcard, or
    klippy.extras.virtual_sdcard for Kalico)."""
    module_name = model.module_prefix + "virtual_sdcard"
    module = types.ModuleType(module_name)
    if model.byte_positions:
        module.DEFAULT_ERROR_GCODE = "TURN_OFF_HEATERS"
    attrs = {"byte_positions": model.byte_positions,
             "uses_executor": model.executor,
             "defers_shutdown_dump": model.analyze_shutdown,
             "__module__": module_name}
    bases = ((DeferredShutdownDump, VirtualSD) if model.analyze_shutdown
             else (VirtualSD,))
    cls = type("VirtualSD", bases, attrs)
    if model.kalico:
        cls.with_subdirs = True
    module.VirtualSD = cls
    sys.modules[module_name] = module
    return cls

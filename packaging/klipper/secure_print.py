# [secure_print]: print lmntd's sealed memfd through virtual_sdcard.
#
# [encrypted_file_bridge] receives the fd; this extra checks it, loads it
# into virtual_sdcard exactly as SDCARD_PRINT_FILE would and starts the
# print. It also provides the G-code commands the owner uses:
#   SET_GCODE_FD FILENAME=virtual_<id>.gcode  (called by the SDCARD_PRINT_FILE
#       macro: asks lmntd for that staged file, then prints it)
#   LMNT_READY  (the owner confirms the bed is clear for the next job)
#
# There is no public Klipper API to print a file object, so the load sets
# virtual_sdcard's private fields; the recipe and the version differences
# it copes with are in lmntd's shared/spec/klipper.md. The load runs inside
# a G-code command of ours, started with gcode.run_script from a reactor
# callback, so it holds the G-code mutex like any other command does.
#
# Python 3.9+ (Klipper v0.11 to master, Kalico), standard library only.
#
# This file may be distributed under the terms of the GNU GPLv3 license.
import fcntl
import io
import logging
import os
import re
import stat

# fcntl constants by number: Python 3.9's fcntl module may not have them.
F_GET_SEALS = 1034
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
REQUIRED_SEALS = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK

# Up to v0.12 a FILENAME with '#', '*' or ';' is cut, even when quoted.
VIRTUAL_NAME_RE = re.compile(r"^virtual_[A-Za-z0-9._-]{1,200}$")
PROC_SELF_FD = "/proc/self/fd"

# virtual_sdcard members the load recipe relies on, in every version.
_VSD_REQUIRED = ("is_active", "_reset_file", "do_resume", "current_file",
                 "file_position", "file_size")


class LoadError(Exception):
    """The fd or the printer state does not allow starting the print."""


class JobContentWithheld(OSError):
    """Raised instead of returning job text once Klipper has shut down."""


# The metadata stub's first line (lmntd's internal/mdstub): printing the
# stub itself stops here, with this extra's message.
STUB_GUARD_COMMAND = "LMNT_METADATA_STUB"
# A print_stats file name lmntd may give its job: its metadata stub,
# <gcodes>/.lmnt/<title>.gcode (letters of any script, digits, space and
# ._-()+, only; no path but that one folder).
STUB_NAME_RE = re.compile(
    r"^\.lmnt/[^/\x00-\x1f\x7f.][^/\x00-\x1f\x7f]{0,120}\.gcode$")


class JobReader(io.TextIOWrapper):
    """virtual_sdcard's current_file for an lmntd job.

    On every shutdown during a print, virtual_sdcard logs the file around
    the read position into klippy.log ("Virtual sdcard (N): ... Upcoming
    (N): ...", up to 1152 bytes): v0.11 to v0.13 and Kalico from their
    klippy:shutdown handler, Klipper master from a callback its
    klippy:analyze_shutdown handler registers. Both read through
    current_file.seek/read. Klipper marks itself shut down before it runs
    any of those handlers, so this reader refuses to seek or read from that
    moment on: the dump logs an exception with this class's message and no
    byte of the job, whatever the order of the handlers, on every version,
    without patching Klipper.
    """

    def _lmnt_guard(self):
        if self._lmnt_is_shutdown():
            raise JobContentWithheld(
                "LMNT: the job's G-code is not read after a shutdown (it "
                "must never reach klippy.log)")

    def read(self, *args):
        self._lmnt_guard()
        return super().read(*args)

    def readline(self, *args):
        self._lmnt_guard()
        return super().readline(*args)

    def readlines(self, *args):
        self._lmnt_guard()
        return super().readlines(*args)

    def __next__(self):
        self._lmnt_guard()
        return super().__next__()

    def seek(self, *args):
        self._lmnt_guard()
        return super().seek(*args)


def check_sealed_memfd(fd):
    """Return the size of fd if it is a regular memfd sealed against change.

    Raises LoadError naming what is wrong.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise LoadError("received fd is not a regular file")
    try:
        seals = fcntl.fcntl(fd, F_GET_SEALS)
    except OSError:
        raise LoadError("received fd is not a sealable memfd")
    if seals & REQUIRED_SEALS != REQUIRED_SEALS:
        raise LoadError("received memfd is not sealed against writing, "
                        "growing and shrinking (seals 0x%x)" % (seals,))
    return st.st_size


def reopen_read_only(fd, proc_self_fd=PROC_SELF_FD):
    """A read-only fd for the same file with its own file offset.

    A received fd shares its offset with the sender's copy; reading through
    a reopened one never disturbs lmntd and can never write.
    """
    try:
        return os.open("%s/%d" % (proc_self_fd, fd),
                       os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise LoadError("cannot reopen received fd read-only: %s"
                        % (os.strerror(e.errno),))


class _Staged:
    """A checked fd waiting for the G-code mutex to be loaded."""

    def __init__(self, fd, size, packet):
        self.fd = fd
        self.size = size
        self.request_id = packet.get("id")
        self.job_id = packet.get("job_id")
        self.name = packet.get("name")
        metadata = packet.get("metadata")
        self.metadata = metadata if isinstance(metadata, dict) else {}
        # What Mainsail shows: the metadata stub's name when lmntd wrote
        # one, else the virtual name.
        filename = packet.get("filename")
        self.filename = (filename if isinstance(filename, str)
                         and STUB_NAME_RE.match(filename) else self.name)
        title = packet.get("title")
        self.title = title if isinstance(title, str) else ""

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SecurePrint:
    def __init__(self, config):
        self.printer = config.get_printer()
        self.reactor = self.printer.get_reactor()
        self.gcode = self.printer.lookup_object("gcode")
        self.staged = {}          # slot -> _Staged
        self.slot_counter = 0
        self.loaded = None        # (job_id, name, reader, raw) of our print
        self.loaded_title = ""
        self.loaded_filename = None
        self.last_error = None
        self.shut_down = False
        self.gcode.register_command(STUB_GUARD_COMMAND,
                                    self.cmd_LMNT_METADATA_STUB,
                                    desc=self.cmd_LMNT_METADATA_STUB_help)
        self.gcode.register_command("_LMNT_START_PRINT",
                                    self.cmd_LMNT_START_PRINT)
        self.gcode.register_command("SET_GCODE_FD", self.cmd_SET_GCODE_FD,
                                    desc=self.cmd_SET_GCODE_FD_help)
        self.gcode.register_command("LMNT_READY", self.cmd_LMNT_READY,
                                    desc=self.cmd_LMNT_READY_help)
        self.printer.register_event_handler("klippy:shutdown",
                                            self._handle_shutdown)
        self.printer.register_event_handler("klippy:disconnect",
                                            self._handle_disconnect)

    def _bridge(self):
        return self.printer.lookup_object("encrypted_file_bridge", None)

    # ---- requests from the bridge ----------------------------------------
    def start_print(self, packet, fd):
        """Handle a print or file packet; owns (and closes) fd.

        The fd is checked here, outside the G-code mutex; the load itself
        waits for the mutex in _LMNT_START_PRINT.
        """
        bridge = self._bridge()
        try:
            try:
                name = packet.get("name")
                if not isinstance(name, str) or not VIRTUAL_NAME_RE.match(
                        name):
                    raise LoadError("file name %r is not virtual_ followed by "
                                    "letters, digits, '.', '_' or '-'"
                                    % (name,))
                size = check_sealed_memfd(fd)
                expected = packet.get("size")
                if isinstance(expected, int) and expected != size:
                    raise LoadError("memfd holds %d bytes, lmntd announced %d"
                                    % (size, expected))
                reopened = reopen_read_only(fd)
            finally:
                os.close(fd)
        except (LoadError, OSError) as e:
            msg = str(e)
            self.last_error = msg
            logging.error("secure_print: refusing %s: %s",
                          packet.get("name"), msg)
            self.gcode.respond_raw("!! LMNT: print refused: %s" % (msg,))
            bridge.send_result(packet.get("id"), False, msg)
            return
        # sha256 is not re-computed here: hashing a 30 MB file would stall
        # Klipper's reactor, and the sealed fd came from the uid-checked
        # daemon that computed it.
        self.slot_counter += 1
        slot = self.slot_counter
        self.staged[slot] = _Staged(reopened, size, packet)
        self.reactor.register_callback(
            lambda eventtime: self._run_start(slot))

    def _run_start(self, slot):
        staged = self.staged.get(slot)
        if staged is None:
            return  # dropped by shutdown/disconnect meanwhile
        error = None
        try:
            self.gcode.run_script("_LMNT_START_PRINT SLOT=%d" % (slot,))
        except self.gcode.error as e:
            error = str(e) or "print start failed"
            self.last_error = error
        finally:
            self.staged.pop(slot, None)
            staged.close()  # no-op once virtual_sdcard owns the fd
        bridge = self._bridge()
        if bridge is not None:
            bridge.send_result(staged.request_id, error is None, error)

    def cancel_print(self, packet):
        request_id = packet.get("id")
        job_id = packet.get("job_id")
        bridge = self._bridge()
        if not self._is_our_print(job_id):
            bridge.send_result(request_id, False,
                               "job %s is not the current print" % (job_id,))
            return

        def run_cancel(eventtime):
            error = None
            try:
                # The owner's CANCEL_PRINT macro (or pause_resume's command)
                # runs their end G-code, exactly as a cancel from Mainsail.
                self.gcode.run_script("CANCEL_PRINT")
            except self.gcode.error as e:
                error = "CANCEL_PRINT failed: %s" % (e,)
            if error is None and self._is_our_print(job_id):
                error = "the print is still loaded after CANCEL_PRINT"
            bridge.send_result(request_id, error is None, error)
        self.reactor.register_callback(run_cancel)

    def _is_our_print(self, job_id):
        if self.loaded is None or job_id is None:
            return False
        loaded_job, _, reader, _ = self.loaded
        vsd = self.printer.lookup_object("virtual_sdcard", None)
        return (loaded_job == job_id and vsd is not None
                and vsd.current_file is reader)

    # ---- G-code commands --------------------------------------------------
    def cmd_LMNT_START_PRINT(self, gcmd):
        # Internal: run by _run_start through gcode.run_script, so the
        # G-code mutex is held while virtual_sdcard's fields change.
        staged = self.staged.get(gcmd.get_int("SLOT", 0))
        if staged is None or staged.fd is None:
            raise gcmd.error("LMNT: no staged print with that slot")
        state_message, state = self.printer.get_state_message()
        if state != "ready":
            raise gcmd.error("LMNT: Klipper is not ready (%s)" % (state,))
        vsd = self.printer.lookup_object("virtual_sdcard", None)
        if vsd is None:
            raise gcmd.error("LMNT: [virtual_sdcard] is missing from "
                             "printer.cfg")
        self._check_vsd_shape(gcmd, vsd)
        print_stats = self.printer.lookup_object("print_stats")
        if vsd.is_active():
            raise gcmd.error("LMNT: SD busy: a print is running")
        if vsd.current_file is not None and print_stats.get_status(
                self.reactor.monotonic()).get("state") == "paused":
            raise gcmd.error("LMNT: a paused print is loaded; cancel it "
                             "before a new job can start")
        vsd._reset_file()
        reader, raw = self._open_reader(gcmd, vsd, staged)
        vsd.current_file = reader
        vsd.file_position = 0
        vsd.file_size = staged.size
        # Moonraker looks print_stats.filename up in its gcodes folder:
        # with lmntd's metadata stub there, Mainsail and Fluidd show the
        # job's thumbnail, estimates and layers, and the history keeps them.
        print_stats.set_current_file(staged.filename)
        gcmd.respond_raw("File opened:%s Size:%d" % (staged.filename,
                                                     staged.size))
        gcmd.respond_raw("File selected")
        self.loaded = (staged.job_id, staged.name, reader, raw)
        self.loaded_title = staged.title
        self.loaded_filename = staged.filename
        self.last_error = None
        self.printer.send_event("virtual_sdcard:load_file")
        vsd.do_resume()
        # set_current_file() reset the layer info, so it is set only now.
        total_layer = staged.metadata.get("total_layer")
        if isinstance(total_layer, int) and not isinstance(
                total_layer, bool) and total_layer > 0:
            try:
                self.gcode.run_script_from_command(
                    "SET_PRINT_STATS_INFO TOTAL_LAYER=%d" % (total_layer,))
            except self.gcode.error as e:
                logging.warning("secure_print: TOTAL_LAYER not applied: %s",
                                e)
        logging.info("secure_print: printing %s (job %s, %d bytes)",
                     staged.name, staged.job_id, staged.size)

    def _check_vsd_shape(self, gcmd, vsd):
        if hasattr(vsd, "print_with_gcode_provider"):
            # Unreleased branches (Klipper PR 6442, Kalico bleeding-edge-v2)
            # moved current_file & co. behind a provider API.
            msg = ("LMNT: this virtual_sdcard uses the gcode provider API, "
                   "which this extra does not support yet")
            logging.error("secure_print: %s", msg)
            raise gcmd.error(msg)
        missing = [a for a in _VSD_REQUIRED if not hasattr(vsd, a)]
        if missing:
            msg = ("LMNT: unknown virtual_sdcard (%s.%s lacks %s); this "
                   "Klipper version is not supported"
                   % (type(vsd).__module__, type(vsd).__name__,
                      ", ".join(missing)))
            logging.error("secure_print: %s", msg)
            raise gcmd.error(msg)

    def _open_reader(self, gcmd, vsd, staged):
        """The text reader virtual_sdcard expects (owning staged.fd), and
        the raw file under it."""
        raw = io.FileIO(staged.fd, "rb", closefd=True)
        staged.fd = None
        try:
            # virtual_sdcard reports current_file.name as file_path.
            raw.name = staged.name
            wrapped = raw
            executor = getattr(vsd, "executor", None)
            if executor is not None:
                # Klipper master reads files on a thread; wrap like
                # _load_file does so reads never block the reactor.
                wrapped = executor.wrap_obj(raw)
            reader = JobReader(io.BufferedReader(wrapped), encoding="utf-8",
                               newline="")
            reader._lmnt_is_shutdown = self._is_shutdown
            return reader, raw
        except Exception:
            raw.close()
            logging.exception("secure_print: opening the print reader")
            raise gcmd.error("LMNT: cannot open the received file")

    cmd_SET_GCODE_FD_help = ("Print a file staged by lmntd "
                             "(FILENAME=virtual_<id>.gcode)")

    def cmd_SET_GCODE_FD(self, gcmd):
        name = gcmd.get("FILENAME").strip().lstrip("/")
        if not VIRTUAL_NAME_RE.match(name):
            raise gcmd.error("LMNT: SET_GCODE_FD: %r is not an lmntd file "
                             "name (virtual_<id>.gcode)" % (name,))
        vsd = self.printer.lookup_object("virtual_sdcard", None)
        if vsd is not None and vsd.is_active():
            raise gcmd.error("LMNT: SD busy: a print is running")
        bridge = self._bridge()
        if bridge is None:
            raise gcmd.error("LMNT: [encrypted_file_bridge] is missing from "
                             "printer.cfg")
        if not bridge.send_fetch(name):
            raise gcmd.error("LMNT: lmntd is not connected; cannot print %s"
                             % (name,))
        gcmd.respond_info("LMNT: asking lmntd for %s" % (name,))

    cmd_LMNT_READY_help = ("Confirm the bed is clear so lmntd may start the "
                           "next job")

    def cmd_LMNT_READY(self, gcmd):
        bridge = self._bridge()
        if bridge is None:
            raise gcmd.error("LMNT: [encrypted_file_bridge] is missing from "
                             "printer.cfg")
        print_stats = self.printer.lookup_object("print_stats", None)
        state = None
        if print_stats is not None:
            state = print_stats.get_status(
                self.reactor.monotonic()).get("state")
        if state in ("printing", "paused"):
            # The bed is not clear while a print is on it. Not an error:
            # from a print's own end G-code an error would fail the print.
            gcmd.respond_info("LMNT: a print is %s; LMNT_READY ignored. Run "
                              "it once the print has ended and the bed is "
                              "clear (or set auto_start in lmntd.toml for "
                              "automatic part removal)" % (state,))
            return
        args = {k.lower(): v
                for k, v in gcmd.get_command_parameters().items()}
        if bridge.send_command("LMNT_READY", args):
            gcmd.respond_info("LMNT: bed clear, confirmation sent to lmntd")
        else:
            gcmd.respond_info("LMNT: bed clear; lmntd is not connected, it "
                              "will be told when it reconnects")

    cmd_LMNT_METADATA_STUB_help = ("First line of lmntd's metadata stubs: "
                                   "refuses to print a stub")

    def cmd_LMNT_METADATA_STUB(self, gcmd):
        raise gcmd.error("LMNT: this file holds only the thumbnails and "
                         "slicer estimates of an lmntd job, no G-code; the "
                         "job itself prints from lmntd, start it again from "
                         "the marketplace")

    # ---- status for Mainsail/Fluidd and macros ----------------------------
    def get_status(self, eventtime):
        """printer["secure_print"] in macros, Moonraker and Mainsail."""
        ours = self._is_our_print(self.loaded[0] if self.loaded else None)
        return {
            "job_id": self.loaded[0] if ours else None,
            "job_title": self.loaded_title if ours else "",
            "filename": self.loaded_filename if ours else None,
            "printing_lmnt_job": ours and not self.shut_down,
            "file_released": bool(self.loaded and self.loaded[3].closed),
            "last_error": self.last_error,
        }

    # ---- Klipper events ---------------------------------------------------
    def _drop_staged(self, reason):
        for slot, staged in sorted(self.staged.items()):
            staged.close()
            bridge = self._bridge()
            if bridge is not None:
                bridge.send_result(staged.request_id, False, reason)
        self.staged.clear()

    def _is_shutdown(self):
        is_shutdown = getattr(self.printer, "is_shutdown", None)
        return self.shut_down or (is_shutdown is not None and is_shutdown())

    def _handle_shutdown(self):
        # Must not pause here (Klipper master asserts it): no G-code.
        self.shut_down = True
        self._drop_staged("Klipper shut down before the print started")
        if self.loaded is not None:
            # Only FIRMWARE_RESTART or RESTART leave the shutdown state, and
            # both start a new printer object: the job can never resume, so
            # its memfd is released now rather than held until then. The
            # raw file is closed (not the reader, whose close would go
            # through master's executor); the reader then fails every read.
            self.loaded[3].close()
            logging.info("secure_print: Klipper shut down; released the "
                         "job's file")

    def _handle_disconnect(self):
        self._drop_staged("Klipper is restarting")
        vsd = self.printer.lookup_object("virtual_sdcard", None)
        if self.loaded is not None and vsd is not None and (
                vsd.current_file is self.loaded[2]):
            # The reactor has stopped; the print cannot continue, and the
            # next Klipper instance must not inherit the memfd. The raw file
            # is closed directly: on Klipper master the reader's close would
            # go through the executor thread, which needs a running reactor.
            vsd.current_file = None
            self.loaded[3].close()
        self.loaded = None


def load_config(config):
    return SecurePrint(config)
